//! Resource manager core (rgmanager): the replicated placement state machine.
//!
//! Every node feeds the same totem-ordered [`Input`]s (membership, quorum,
//! fence outcomes, operator requests, resource results, configuration
//! versions), each with the ordered message's agreed timestamp, into its own
//! [`Scheduler`]. Because the scheduler is deterministic (no clock, no
//! randomness, ordered maps, ties broken by node id), every node computes the
//! same owner and state for every service without a leader. Only the owner
//! runs agents: [`Scheduler::poll_action`] hands each node its own
//! [`Action`]s, and the node reports results back through totem as
//! [`Input::Result`].
//!
//! Policy follows rgmanager: failover domains (ordered, restricted,
//! nofailback), `exclusive`, `autostart`, `recovery` (restart with
//! `max_restarts`/`restart_expire_time`, relocate, disable, restart-disable),
//! `depend` (hard/soft), live migration of vms as the move of choice, clean
//! leave, quorum loss stops everything in the inquorate partition, and a lost
//! node's services are recovered only after it is fenced.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod scheduler;
pub mod spec;

pub use error::{ConfigError, RequestError};
pub use scheduler::{
    fmt_instant, Action, Event, Input, InputError, MemberView, OpId, Outcome, Report, Request,
    Scheduler, ServiceView, Snapshot, State, Stats, View, EVENT_CAPACITY,
};
pub use spec::{
    start_order, stop_order, type_level, ClusterSpec, DependMode, DomainNode, DomainSpec,
    MigrateMode, NodeSpec, Recovery, ResourceSpec, ResourceStep, ServiceKind, ServiceSpec,
};

#[cfg(test)]
mod tests;
