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
//!
//! # Wiring a driver (for `quorated` and `quorate totem status`)
//! 1. Build a [`TotemConfig`] with [`TotemConfig::new`] from cluster.conf:
//!    node ids of `<clusternode>`, `rings = 2` when nodes have `<altname>`,
//!    `<totem token=.. join=.. consensus=.. fail_recv_const=.. window_size=..
//!    max_messages=.. token_retransmits_before_loss_const=..>` (use
//!    [`TotemConfig::with_token`] first, then override), `key` from the
//!    authkey file via [`ClusterKey::from_authkey`], `epoch` = persisted boot
//!    counter + 1, `initial_ring_seq` = persisted ring sequence.
//! 2. Loop: on a datagram call `handle_packet(now, ring, Some(peer), bytes)`;
//!    on a local request `handle_command`; at `poll_deadline()` call
//!    `handle_timeout`. After each call persist any
//!    [`Event::PersistRingSeq`] first, then send every [`Transmit`] to
//!    `(to, ring)` (udpu: one unicast per peer and ring address), then hand
//!    the other events to quorum/fence/rm/dlm.
//! 3. `quorate totem status [--json]`: serialize [`TotemNode::status`]
//!    (ring id, members, faulty links per ring, counters).
//! 4. `quorate keygen`: write [`generate_authkey`] of 128 OS-random bytes,
//!    mode 0400.
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
    Command, CommandError, ConfigChange, Delivery, Event, LinkStatus, NodeStatus, RingHealth,
    RingState, State, Stats, TotemNode, Transmit,
};
pub use wire::RingId;
