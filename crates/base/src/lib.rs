//! The shared vocabulary of quorate's protocol cores.
//!
//! Every sans-IO core (totem, quorum, fence, rm, replica, dlm) speaks in these
//! types, so that the simulator can construct any instant, any node id and any
//! random stream, and the drivers can build them from the real clock.
//!
//! This crate depends on nothing but `serde` and never touches a clock,
//! a socket or the operating system's randomness.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ids;
pub mod rng;
pub mod time;

pub use ids::NodeId;
pub use rng::DetRng;
pub use time::{Duration, Instant};
