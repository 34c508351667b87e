//! Totem single-ring protocol as a sans-IO state machine: membership, total
//! order, extended virtual synchrony, closed process groups.
//!
//! [`TotemNode`] is one node of the ring. It never touches a socket or a
//! clock: the driver (or the simulator) feeds it packets, timer expiries and
//! local commands, each with the current [`base::Instant`], and drains
//! [`Transmit`]s, [`Event`]s and the next deadline. See [`node`] for the
//! protocol and the calling contract.
//!
//! Layers:
//! - [`wire`]: the protocol's messages and their checked encoding;
//! - [`crypto`]: framing, XChaCha20-Poly1305 sealing and replay windows;
//! - [`node`]: the single ring protocol (token, membership, recovery, EVS),
//!   redundant rings (passive) and the process-group layer ([`cpg`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod cpg;
pub mod crypto;
pub mod limits;
pub mod node;
pub mod wire;

pub use config::{ConfigError, TotemConfig};
pub use cpg::{CpgEvent, GroupName};
pub use crypto::{generate_authkey, ClusterKey, KeyError};
pub use node::{
    Command, CommandError, ConfigChange, Delivery, Event, LinkStatus, NodeStatus, State, Stats,
    TotemNode, Transmit,
};
pub use wire::RingId;
