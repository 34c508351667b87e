//! Vote-based quorum and the quorum disk as sans-IO state machines.
//!
//! Two cores live here, neither touches a clock, a socket or a disk:
//!
//! * [`votes::VoteQuorum`]: cman's vote arithmetic (expected votes, two_node,
//!   quorum device votes) plus votequorum's wait_for_all and last_man_standing.
//!   It is fed by membership changes and by small [`votes::QuorumMsg`] messages
//!   that the integrator broadcasts through totem, so every member of a
//!   configuration computes the same decision from the same ordered inputs.
//! * [`qdisk::Qdisk`]: qdiskd's role. Every `interval` it asks the driver to
//!   read all status blocks of the shared device and to write its own, tracks
//!   which nodes are alive *to the disk* by their sequence counters, elects a
//!   master and tells the vote core whether the device's votes count for this
//!   node. [`layout`] is the on-disk format.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod layout;
pub mod qdisk;
pub mod votes;

pub use qdisk::{
    HeuristicConfig, Qdisk, QdiskAction, QdiskConfig, QdiskConfigError, QdiskEvent, QdiskState,
    QdiskStatus,
};
pub use votes::{
    Membership, NodeState, QuorumConfig, QuorumConfigError, QuorumEvent, QuorumMsg, QuorumStatus,
    SetExpectedError, VoteQuorum,
};
