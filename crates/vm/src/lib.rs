//! QEMU/KVM guests as cluster resources: command lines, accelerator choice, lifecycle and live migration over QMP.
//!
//! * [`GuestDef`]: what an administrator writes about a guest.
//! * [`build_argv`]: the QEMU command line for it (pure).
//! * [`detect_accel`] / [`HostProbe`]: KVM only where it really works, TCG otherwise, with the reason.
//! * [`Guest`]: a running QEMU process driven over QMP: start, adopt, status, stop,
//!   live or paused migration ([`Guest::migrate_to`], [`Guest::start_incoming`]).
//! * [`VmManager`] ([`resource`]): the `<vm>` resource handler the node daemon calls
//!   (start/adopt, stop, status, prepare_incoming, migrate_out), fed with the `<vm>`
//!   element's attributes ([`GuestDef::from_attrs`]).
//! * [`TinyGuest`]: the counter-writing test guest of `scripts/guest/`; [`bench`] measures it.
#![warn(missing_docs)]

mod accel;
mod argv;
mod attrs;
pub mod bench;
mod def;
mod driver;
mod proc;
pub mod resource;
mod tiny;

pub use accel::{detect_accel, Accel, AccelChoice, HostProbe};
pub use argv::{build_argv, Launch, QEMU_BINARY};
pub use attrs::ParsedVm;
pub use def::{
    AccelMode, CacheMode, DirectKernel, Disk, DiskFormat, DiskSource, GuestDef, MigrationMode,
    MigrationSettings, Network, OnPanic,
};
pub use driver::{Guest, GuestState, GuestStatus, MigrationProgress, MigrationStats, StopOutcome};
pub use resource::{StartOutcome, VmAttrs, VmManager};
pub use tiny::{
    blank_disk, serial_counters, serial_resumed, supports_direct_io, TinyGuest, BUILD_SCRIPT,
};

/// Errors of guest definition, start, stop and migration.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The guest definition is unusable; the message says which field and why.
    #[error("guest {guest}: {message}")]
    Invalid {
        /// Guest name.
        guest: String,
        /// What is wrong and what to change.
        message: String,
    },
    /// QEMU could not be started.
    #[error("guest {guest}: QEMU failed to start: {message}")]
    Spawn {
        /// Guest name.
        guest: String,
        /// QEMU's own error output, or the OS error.
        message: String,
    },
    /// The guest already runs (its pidfile names a live QEMU); adopt it instead.
    #[error("guest {guest} already runs as pid {pid}; adopt it instead of starting it twice")]
    AlreadyRunning {
        /// Guest name.
        guest: String,
        /// QEMU's pid.
        pid: i32,
    },
    /// A QMP command failed.
    #[error("guest {guest}: {source}")]
    Qmp {
        /// Guest name.
        guest: String,
        /// The QMP error.
        #[source]
        source: qmp::QmpError,
    },
    /// Migration failed or timed out; the guest still runs on the source.
    #[error("guest {guest}: migration failed ({reason}); the guest keeps running on the source")]
    Migration {
        /// Guest name.
        guest: String,
        /// QEMU's error description or "timed out after N ms".
        reason: String,
        /// Progress at the moment of failure.
        last: Option<MigrationProgress>,
    },
    /// The tiny test guest could not be built.
    #[error("tiny guest: {message}")]
    TinyGuest {
        /// What failed and which packages to install.
        message: String,
    },
    /// Waiting for a state took too long.
    #[error("guest {guest}: timed out after {ms} ms waiting for {what}")]
    Timeout {
        /// Guest name.
        guest: String,
        /// What was awaited.
        what: String,
        /// The limit.
        ms: u64,
    },
}
