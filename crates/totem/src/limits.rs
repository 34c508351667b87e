//! Every bound of the protocol core, in one place.

/// Most nodes in a cluster (and in any node list on the wire).
pub const MAX_NODES: usize = 256;
/// Largest message payload (bytes). A frame must fit one UDP datagram.
pub const MAX_PAYLOAD: usize = 60 * 1024;
/// Most retransmission requests carried by one token (corosync: 30).
pub const MAX_RTR: usize = 30;
/// Most messages sequenced on a ring beyond what every member holds
/// (corosync's retransmit queue of 16384 slots). Senders stop at this.
pub const MAX_OUTSTANDING: u64 = 16_384;
/// Most local messages queued waiting for the token; more is
/// [`crate::CommandError::QueueFull`] (back-pressure to the caller).
pub const MAX_PENDING: usize = 8_192;
/// Most pending events or transmits before the oldest are dropped and
/// counted (only reached if the driver stops draining).
pub const MAX_OUTBOX: usize = 1 << 20;
/// Longest process group name (bytes), as CPG's.
pub const MAX_GROUP_NAME: usize = 128;
/// Most process groups one node can be in.
pub const MAX_LOCAL_GROUPS: usize = 1024;
/// Most redundant rings.
pub const MAX_RINGS: u8 = 2;
