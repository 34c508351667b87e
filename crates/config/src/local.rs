//! Which clusternode is this machine: a pure function over addresses, as cman decides.

use crate::model::{ClusterConf, ClusterNode};
use std::net::IpAddr;

/// Why the local node could not be identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalNodeError {
    /// No node name resolves to a local address.
    #[error("no <clusternode> resolves to an address of this machine (local addresses: {}; nodes: {})", fmt_addrs(.local), fmt_nodes(.tried))]
    NoMatch {
        /// Addresses of this machine.
        local: Vec<IpAddr>,
        /// Each node name and what it resolved to.
        tried: Vec<(String, Vec<IpAddr>)>,
    },
    /// More than one node name resolves to a local address.
    #[error("several <clusternode>s resolve to addresses of this machine: {}", .0.join(", "))]
    Ambiguous(Vec<String>),
}

impl LocalNodeError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            LocalNodeError::NoMatch { .. } => "make this node's <clusternode name> resolve to one of this machine's addresses (e.g. in /etc/hosts), or name the node explicitly (`quorate node --node NAME`)",
            LocalNodeError::Ambiguous(_) => "name the node explicitly (`quorate node --node NAME`); several nodes on one host always need it",
        }
    }
}

fn fmt_addrs(a: &[IpAddr]) -> String {
    if a.is_empty() {
        return "none".into();
    }
    a.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_nodes(t: &[(String, Vec<IpAddr>)]) -> String {
    t.iter()
        .map(|(n, a)| {
            if a.is_empty() {
                format!("{n} -> unresolved")
            } else {
                format!("{n} -> {}", fmt_addrs(a))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The clusternode whose name (or IP-literal name) resolves to one of `local_addrs`.
///
/// `resolve` maps a host name to its addresses (the binary uses the system resolver;
/// tests pass a table). Names that are IP literals are not resolved.
pub fn identify_local_node<'c>(
    conf: &'c ClusterConf,
    local_addrs: &[IpAddr],
    mut resolve: impl FnMut(&str) -> Vec<IpAddr>,
) -> Result<&'c ClusterNode, LocalNodeError> {
    let mut tried = Vec::new();
    let mut hits: Vec<&ClusterNode> = Vec::new();
    for node in &conf.nodes {
        let addrs = match node.name.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => resolve(&node.name),
        };
        if addrs.iter().any(|a| local_addrs.contains(a)) {
            hits.push(node);
        }
        tried.push((node.name.clone(), addrs));
    }
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(LocalNodeError::NoMatch {
            local: local_addrs.to_vec(),
            tried,
        }),
        many => Err(LocalNodeError::Ambiguous(
            many.iter().map(|n| n.name.clone()).collect(),
        )),
    }
}
