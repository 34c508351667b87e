//! Driver for the quorum disk core ([`quorum::Qdisk`]).
//!
//! The core decides; this crate only does what it asks:
//!
//! * [`device::Device`]: positioned reads and writes of the shared file or
//!   block device, each write flushed with `fdatasync`, optionally `O_DIRECT`
//!   (needed on a real shared LUN so no page cache hides the other nodes'
//!   writes). [`device::format`] is `mkqdisk -c`, [`device::list`] is `mkqdisk -L`.
//! * [`heuristic::run`]: one heuristic as `sh -c PROGRAM` in its own process
//!   group, killed (the whole group) on timeout.
//! * [`driver::QdiskHandle`]: a thread that runs the core on the real clock and
//!   reports [`driver::DriverEvent`]s.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod device;
pub mod driver;
pub mod heuristic;

pub use device::{format, list, Device, DeviceError, DiskListing};
pub use driver::{fresh_incarnation, DriverEvent, DriverOptions, QdiskHandle, StartError};
