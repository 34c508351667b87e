//! Configuration of one node, with corosync's defaults.

use crate::crypto::ClusterKey;
use crate::limits::{MAX_NODES, MAX_RINGS};
use base::{Duration, NodeId};

/// Everything a [`crate::TotemNode`] needs to know at start. Build with
/// [`TotemConfig::new`] (timers as corosync 3, flow control larger) and
/// override fields from cluster.conf's `<totem>`.
#[derive(Clone, Debug)]
pub struct TotemConfig {
    /// This node.
    pub node_id: NodeId,
    /// Every configured node, including this one.
    pub nodes: Vec<NodeId>,
    /// Number of rings (networks): 1, or 2 for a passive redundant ring.
    pub rings: u8,
    /// Token loss timeout (`token`, default 3000 ms).
    pub token: Duration,
    /// Token retransmits before loss (default 4); the token is re-sent every
    /// `token / (retransmits + 0.2)`.
    pub token_retransmits_before_loss_const: u32,
    /// Interval between join messages while gathering (default 50 ms).
    pub join: Duration,
    /// Longest wait for agreement on a membership (default 1.2 × token).
    pub consensus: Duration,
    /// How long, after starting a gather round, to wait for answers before
    /// declaring failed the nodes that have been silent for a whole token
    /// timeout already (default 2 × join). See [`crate::node`] docs.
    pub fast_fail_wait: Duration,
    /// Interval of merge-detect messages from a representative (200 ms).
    pub merge: Duration,
    /// Rotations a node may hold the ring's aru back before it declares
    /// itself failed to receive (default 2500).
    pub fail_recv_const: u32,
    /// Most messages multicast per token rotation (default 256; corosync's
    /// is 50). Bounded by what a receiver's socket buffer absorbs in one
    /// rotation: 256 frames of 1 KiB are about 600 KiB of the 4 MiB buffer
    /// the daemon asks for (corosync's 50 fit the 208 KiB default buffer).
    pub window_size: u32,
    /// Most messages one node multicasts per token visit (default 64, the
    /// most one segmentation-offload send carries; corosync's is 17). Fewer
    /// messages per visit means more token hops per message, and a hop
    /// costs about as much CPU as the messages themselves.
    pub max_messages: u32,
    /// How long the representative holds an idle token before passing it
    /// on (zero: never). Saves CPU and packets on an idle ring.
    pub hold: Duration,
    /// Redundant ring: interval of per-link heartbeats (default token / 8).
    pub heartbeat: Duration,
    /// Redundant ring: a link not heard for this long is faulty
    /// (default token / 2).
    pub link_timeout: Duration,
    /// Cluster key; `None` sends plaintext (simulation and tests only).
    pub key: Option<ClusterKey>,
    /// Boot counter, persisted by the driver and incremented at every start
    /// (part of every packet nonce; lets peers drop replays).
    pub epoch: u64,
    /// Highest ring sequence number this node ever used, persisted by the
    /// driver from [`crate::Event::PersistRingSeq`].
    pub initial_ring_seq: u64,
}

/// A configuration the protocol cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The node itself is not in the node list.
    #[error("node {0} is not in the configured node list; add it to <clusternodes>")]
    SelfNotListed(u32),
    /// Node id 0, duplicates or too many nodes.
    #[error("bad node list: {0}")]
    BadNodes(String),
    /// A timer combination that cannot work.
    #[error("bad timers: {0}")]
    BadTimers(String),
    /// Ring count out of range.
    #[error("rings must be 1 or 2, got {0}")]
    BadRings(u8),
    /// Flow control values out of range.
    #[error("window_size and max_messages must be >= 1 and max_messages <= window_size")]
    BadWindow,
}

impl TotemConfig {
    /// Defaults for `node_id` among `nodes`: corosync 3's timers, and a
    /// larger flow-control window (see [`TotemConfig::window_size`]).
    pub fn new(node_id: NodeId, nodes: Vec<NodeId>) -> TotemConfig {
        let token = Duration::from_millis(3000);
        let join = Duration::from_millis(50);
        TotemConfig {
            node_id,
            nodes,
            rings: 1,
            token,
            token_retransmits_before_loss_const: 4,
            join,
            consensus: Duration::from_nanos(token.as_nanos() / 5 * 6),
            fast_fail_wait: join.mul(2),
            merge: Duration::from_millis(200),
            fail_recv_const: 2500,
            window_size: 256,
            max_messages: 64,
            hold: Duration::ZERO,
            heartbeat: Duration::from_nanos(token.as_nanos() / 8),
            link_timeout: Duration::from_nanos(token.as_nanos() / 2),
            key: None,
            epoch: 1,
            initial_ring_seq: 0,
        }
    }

    /// Sets `token` and the timers corosync derives from it (consensus,
    /// heartbeat, link timeout).
    pub fn with_token(mut self, token: Duration) -> TotemConfig {
        self.token = token;
        self.consensus = Duration::from_nanos(token.as_nanos() / 5 * 6);
        self.heartbeat = Duration::from_nanos(token.as_nanos() / 8);
        self.link_timeout = Duration::from_nanos(token.as_nanos() / 2);
        self
    }

    /// Token retransmit interval: `token / (retransmits + 0.2)`, as corosync.
    pub fn token_retransmit(&self) -> Duration {
        let k = u64::from(self.token_retransmits_before_loss_const) * 10 + 2;
        Duration::from_nanos(self.token.as_nanos().saturating_mul(10) / k)
    }

    /// Checks the configuration; the error says what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut sorted = self.nodes.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.nodes.len() {
            return Err(ConfigError::BadNodes("duplicate node ids".into()));
        }
        if sorted.iter().any(|n| n.0 == 0) {
            return Err(ConfigError::BadNodes("node id 0 is reserved".into()));
        }
        if sorted.len() > MAX_NODES {
            return Err(ConfigError::BadNodes(format!(
                "more than {MAX_NODES} nodes"
            )));
        }
        if !sorted.contains(&self.node_id) {
            return Err(ConfigError::SelfNotListed(self.node_id.0));
        }
        if self.rings == 0 || self.rings > MAX_RINGS {
            return Err(ConfigError::BadRings(self.rings));
        }
        if self.window_size == 0 || self.max_messages == 0 || self.max_messages > self.window_size {
            return Err(ConfigError::BadWindow);
        }
        let ms = |d: Duration| d.as_millis();
        if self.token < Duration::from_millis(10) {
            return Err(ConfigError::BadTimers(format!(
                "token {} ms is below 10 ms",
                ms(self.token)
            )));
        }
        if self.join.as_nanos() == 0 || self.merge.as_nanos() == 0 {
            return Err(ConfigError::BadTimers(
                "join and merge must be above 0".into(),
            ));
        }
        if self.consensus < self.join.mul(2) {
            return Err(ConfigError::BadTimers(
                "consensus must be at least 2 x join".into(),
            ));
        }
        if self.hold.mul(2) > self.token_retransmit() {
            return Err(ConfigError::BadTimers(
                "hold must be at most half the token retransmit interval".into(),
            ));
        }
        if self.rings > 1
            && (self.heartbeat.as_nanos() == 0 || self.link_timeout < self.heartbeat.mul(2))
        {
            return Err(ConfigError::BadTimers(
                "link_timeout must be at least 2 x heartbeat (and heartbeat above 0)".into(),
            ));
        }
        if self.fail_recv_const == 0 {
            return Err(ConfigError::BadTimers(
                "fail_recv_const must be >= 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_corosync_and_validate() {
        let c = TotemConfig::new(NodeId(1), vec![NodeId(1), NodeId(2)]);
        c.validate().unwrap();
        assert_eq!(c.token_retransmit().as_millis(), 714);
        assert_eq!(c.consensus.as_millis(), 3600);
        let mut bad = c.clone();
        bad.node_id = NodeId(3);
        assert_eq!(bad.validate(), Err(ConfigError::SelfNotListed(3)));
        let mut bad = c.clone();
        bad.max_messages = bad.window_size + 1;
        assert_eq!(bad.validate(), Err(ConfigError::BadWindow));
        let bad = c.clone().with_token(Duration::from_millis(1));
        assert!(matches!(bad.validate(), Err(ConfigError::BadTimers(_))));
    }
}
