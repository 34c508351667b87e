//! Resource executor (rgmanager's resource agents): runs a service's resources on the local node.
//!
//! The [`rm`] scheduler hands the local node [`rm::Action`]s; [`Executor::run`]
//! carries one out with real agents and returns an [`ActionReport`]: what
//! happened ([`ExecResult`], mapped to the [`rm::Outcome`] to report with
//! [`ActionReport::outcome`]) and a log of every command run with its exit
//! code (never a secret: parameters travel in the environment, and values of
//! secret-looking keys are scrubbed from captured output).
//!
//! Semantics follow rgmanager:
//! - start: each resource in the given order; on the first failure the ones
//!   already started are stopped again (reverse order, best effort) and the
//!   result is [`ExecResult::StartFailed`];
//! - stop: each resource in the given (already reversed) order; a failure does
//!   not stop the others from being stopped, and the result is
//!   [`ExecResult::StopFailed`];
//! - status: each resource; the first failure gives [`ExecResult::StatusFailed`],
//!   success gives [`ExecResult::StatusOk`], which is not reported to the scheduler.
//!
//! Agents per resource type ([`rm::ResourceStep::rtype`]):
//! - `script`: an LSB init script (`file`): start, stop, status (3 = stopped);
//! - `ip`: a floating address (`address`, `monitor_link`) added to the interface
//!   whose subnet contains it, with `ip addr`;
//! - `fs`: a filesystem (`device`, `mountpoint`, `fstype`, `options`,
//!   `force_fsck`, `force_unmount`) mounted with `mount`;
//! - `vm`: handed to the [`VmHandler`] given with [`Executor::with_vm_handler`];
//! - `replica`: a replicated volume, handed to the [`ReplicaHandler`] given with
//!   [`Executor::with_replica_handler`] (start promotes, stop demotes, status
//!   checks Primary and UpToDate);
//! - anything else: an OCF agent, `ocf:PROVIDER:TYPE` or a bare name looked up
//!   under `<ocf_root>/resource.d/heartbeat`, then every other provider, then
//!   rgmanager's `/usr/share/cluster/<name>.sh`.
//!
//! Timeouts: start 60 s, stop 60 s, status/monitor 20 s, overridden per
//! resource with the attributes `__start_timeout`, `__stop_timeout` and
//! `__status_timeout` (alias `__monitor_timeout`), in seconds or with a unit
//! (`500ms`, `30s`, `2m`, `1h`); [`fold_action_timeouts`] turns rgmanager's
//! `<action name timeout>` elements into these attributes. An agent that hangs past its timeout has its
//! whole process group killed and counts as failed. An agent that exits
//! normally leaves its children alone: a daemon an init script starts with a
//! bare `&` keeps running (its output pipes are closed after 50 ms). Attributes
//! starting with `__` are never passed to agents.
//!
//! Network namespaces: [`Executor::with_netns`] wraps every network-facing
//! command (`ip`, `arping`, LSB scripts, OCF agents) in `ip netns exec NAME`.
//! Filesystem commands (`mount`, `umount`, `fsck`, `fuser`) always run in the
//! executor's own mount namespace, because `ip netns exec` gives its child a
//! private mount namespace where a mount would vanish on exit. That private
//! copy also holds every filesystem mounted when it was made; where `/` is a
//! shared mount (systemd's default) later unmounts propagate into it, but where
//! `/` is private (some containers) a long-lived process started in the
//! namespace keeps such a filesystem busy after its unmount.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cmd;
mod exec;
pub mod fs;
pub mod ip;
pub mod meta;
mod ocf;
mod script;
mod timeout;

pub use cmd::CmdLog;
pub use exec::{
    ActionReport, ExecResult, Executor, Op, ReplicaHandler, StepError, StepLog, VmFuture,
    VmHandler, VmStatus, DEFAULT_RGMANAGER_DIR, DEFAULT_STATUS_CHILD_MAX,
};
pub use timeout::{
    fold_action_timeouts, op_timeout, parse_duration, DEFAULT_START_TIMEOUT,
    DEFAULT_STATUS_TIMEOUT, DEFAULT_STOP_TIMEOUT,
};
