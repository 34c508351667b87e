//! Deterministic simulator: whole clusters of the real protocol cores under
//! seeded faults, with invariant checks after every step.
//!
//! Everything runs in one thread on a virtual clock; an event queue ordered
//! by `(time, insertion seq)` makes every run a pure function of its seed.
//! See [`totem`] for the Totem cluster simulation (`quorate sim totem`) and
//! [`cluster`] for whole node stacks with fencing and services (`quorate sim
//! cluster`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod totem;
