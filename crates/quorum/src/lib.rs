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
//!
//! # Wiring (for the `quorate` binary and the simulator)
//!
//! ```text
//! totem config change ──► VoteQuorum::handle_membership(now, Membership{ring_id, members})
//!                    └──► qdisk driver: set_membership(member ids)
//! loop { VoteQuorum::poll_message() ──► totem broadcast (QuorumMsg::encode) }
//! totem delivery (from, bytes) ──► VoteQuorum::handle_message(now, from, QuorumMsg::decode(bytes)?)
//! QdiskEvent::Availability{master} ──► VoteQuorum::set_qdisk(now, master)
//! QdiskAction::SelfFence / DriverEvent::SelfFence ──► reboot this node
//! VoteQuorum::poll_deadline() ──► VoteQuorum::handle_timeout(now)
//! QuorumEvent::QuorumGained / QuorumLost{reason} ──► log verbatim; gate rgmanager, fenced, dlm
//! VoteQuorum::status() ──► `quorate cman status [--json]` (QuorumStatus::cman_lines for text)
//! ```
//!
//! Config mapping: `<clusternode nodeid votes>` → [`QuorumConfig::nodes`],
//! `<cman expected_votes two_node>` → `expected_votes`, `two_node`;
//! `<quorumd votes>` → [`QuorumConfig::qdisk_votes`] and [`QdiskConfig::votes`];
//! `<quorumd interval tko tko_up master_wait min_score master_wins reboot
//! max_error_cycles>` and `<heuristic program score interval tko>` →
//! [`QdiskConfig`] (call [`QdiskConfig::apply_auto_master_wins`] and
//! [`QdiskConfig::check_token_timeout`]). `wait_for_all`, `last_man_standing`
//! and `last_man_standing_window` are our extensions under `<cman>`.
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
