//! The node daemon's drivers.
//!
//! Everything here owns an operating-system resource (a socket, a clock) and
//! nothing here decides anything: the protocol cores decide, the daemon carries
//! out their actions.
//!
//! - [`ipc`]: the admin socket in the node's state dir, one JSON request and one
//!   JSON response per line, and the client the admin commands use.
//! - [`udp`]: one UDP socket per ring, unicast to each node.
//! - [`clock`]: the monotonic clock turned into [`base::Instant`].
//! - [`replicas`]: this node's replicated volumes (`<replicas>`), their NBD exports and the
//!   fence-peer hook.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod ipc;
pub mod load;
pub mod node;
pub mod plan;
pub mod replicas;
pub mod udp;
