//! The fence domain as a sans-IO state machine: who fences whom, in what order, and when recovery may proceed.
//!
//! [`FenceDomain`] is fenced's logic without any I/O. The driver feeds it
//! membership changes ([`FenceDomain::handle_membership`]), agent results
//! ([`FenceDomain::handle_agent_result`]), fence outcomes delivered in totem
//! order ([`FenceDomain::handle_fence_outcome`]), operator commands and timer
//! expiries ([`FenceDomain::handle_timeout`]); it hands back [`Action`]s (run
//! this agent, broadcast this outcome), [`Event`]s and its next deadline.
//!
//! Rules (as RHCS's fenced): a member lost by a quorate partition is fenced
//! after `post_fail_delay` by one member (the lowest node id, re-elected if it
//! leaves); methods are tried in order, every device of a method must succeed
//! (reboot over several devices = off on each, then on on each); after the last
//! method fails, wait `override_time` and start over, forever, until an agent or
//! an operator (`fence_ack_manual`) succeeds. Nothing is fenced while inquorate.
//! A victim that rejoins before fencing starts is not fenced. At cold start,
//! nodes not seen within `post_join_delay` are fenced unless `clean_start`.
//!
//! Members agree through [`FenceOutcome`] messages delivered in totem order:
//! `Fenced`/`ManualAck` (recovery may proceed), `Rejoined` (not fenced),
//! `StartupAbsent` (the lowest member's cold-start decision) and `Pending`
//! (victims announced to members that join, so no member waits on a fencer
//! that never heard of the victim). When in doubt the domain fences again:
//! fencing a node twice is harmless, missing one is not.
//!
//! # Wiring it into a daemon
//! - Config: for each `<clusternode>`, build a [`NodeFence`]; for each `<device>` line,
//!   `Device::from_attrs(fencedevice_attrs.merged(&device_attrs))` (both [`AgentArgs`]).
//!   `<fence_daemon>` maps onto [`FenceConfig`] (`post_join_delay="-1"` = `None`).
//! - Inputs: every quorum/membership change → [`FenceDomain::handle_membership`]; every
//!   delivered outcome message ([`FenceOutcome::decode`]) → [`FenceDomain::handle_fence_outcome`];
//!   agent results → [`FenceDomain::handle_agent_result`]; the deadline → [`FenceDomain::handle_timeout`].
//! - Outputs: [`Action::RunAgent`] → run it off the event loop (crate `agents`, `AgentPool`);
//!   [`Action::Broadcast`] → send [`FenceOutcome::encode`] through totem to every member,
//!   including this node. [`Event::Fenced`] (or [`FenceDomain::is_fenced`]) is what recovery
//!   waits for; [`FenceDomain::blocked`] lists what it is blocked on.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod config;
mod domain;
mod report;

pub use args::{is_secret_key, AgentArgs, Secret};
pub use config::{Device, FenceConfig, Membership, Method, NodeFence};
pub use domain::{
    Action, AgentRun, Event, FenceDomain, FenceOutcome, FenceStatus, FencedRecord, JobKind,
    OutcomeKind, VictimReason, VictimState, VictimStatus,
};
pub use report::{manual_ack_warning, DecodeError, MAX_OUTCOME_BYTES};

/// Errors from operator commands and configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// The node is not waiting to be fenced.
    #[error("node {0} is not waiting to be fenced; `quorate fence status` lists the victims")]
    NotPending(base::NodeId),
    /// A node cannot fence itself.
    #[error("node {0} is this node; fence it from another member")]
    CannotFenceSelf(base::NodeId),
    /// The node is not in the configuration.
    #[error("node {0} is not a <clusternode> of this cluster; check the node id")]
    UnknownNode(base::NodeId),
    /// The node has no `<unfence>` devices.
    #[error("node {0} has no <unfence> devices in its <clusternode>; nothing to unfence")]
    NoUnfenceDevices(base::NodeId),
    /// The node is already being fenced or unfenced.
    #[error("node {0} is already being fenced or unfenced")]
    Busy(base::NodeId),
    /// A device definition is unusable.
    #[error("fence device {device:?}: {reason}")]
    BadDevice {
        /// The device's name.
        device: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}
