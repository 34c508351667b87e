//! Replicated block storage (DRBD's role) as a sans-IO state machine: roles, protocols A/B/C,
//! metadata (generation identifiers, dirty bitmap, activity log), resync, online verify, split-brain
//! detection and resolution, and the resource-and-stonith freeze.

pub mod bench;
pub mod bitmap;
pub mod driver;
pub mod engine;
pub mod gen;
pub mod meta;
pub mod msg;

pub use bitmap::Bitmap;
pub use driver::{create_metadata, ReplicaBackend, Volume, VolumeConfig, VolumeEvent};
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
