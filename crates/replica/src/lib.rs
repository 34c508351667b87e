//! Replicated block storage (DRBD's role) as a sans-IO state machine: roles, protocols A/B/C,
//! metadata (generation identifiers, dirty bitmap, activity log), resync, online verify, split-brain
//! detection and resolution, and the resource-and-stonith freeze.
//!
//! Layers:
//! - [`engine::Replica`]: the sans-IO engine of one volume on one node (inputs `handle_*(now, ..)`,
//!   outputs [`Action`]s and [`Event`]s, `poll_deadline`).
//! - [`gen`], [`bitmap`], [`meta`], [`msg`]: generation identifiers and the handshake decision,
//!   the dirty bitmap, on-disk metadata, and the wire codec.
//! - [`driver::Volume`]: tokio driver (backing file, metadata file, TCP link to the peer; the lower
//!   node id dials). [`driver::ReplicaBackend`] plugs a volume into the `nbd` server.
//! - [`bench`]: `quorate bench replica`.
//!
//! Wiring for the `quorate` binary: `create_metadata` (`replica create-md`), `Volume::start` +
//! `connect`, `promote`/`demote` (the rgmanager `replica` resource), `VolumeEvent::FencePeer` →
//! run fencing → `Volume::fence_result`, `Volume::status()` (`Display` for humans, `Serialize` for
//! `--json`), `discard_my_data` + `connect` (split-brain victim), `verify`.

pub mod bench;
pub mod bitmap;
pub mod driver;
pub mod engine;
pub mod gen;
pub mod meta;
pub mod msg;

pub use bitmap::Bitmap;
pub use driver::{
    create_metadata, ReplicaBackend, StageTime, Volume, VolumeConfig, VolumeEvent, WriteStages,
};
pub use engine::{
    Action, ConnState, Event, FenceOutcome, Fencing, Replica, ReplicaConfig, ReplicaError, ReqId,
    ResyncProgress, Status,
};
pub use gen::{
    resolve_split_brain, uuid_compare, AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, CrashFlags, Gen,
    SbResolution, SbSide, SplitBrainPolicy, SyncDecision,
};
pub use meta::{ActivityLog, DiskState, MetaError, MetaFlags, Metadata};
pub use msg::{DecodeError, Hello, Msg, Protocol, Role};
