//! Identifiers that cross crate boundaries.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A cluster node, as numbered by `<clusternode nodeid="...">` in cluster.conf.
///
/// Always positive: cluster.conf validation rejects zero.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u32);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
