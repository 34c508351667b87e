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
//!
//! # Driver contract
//! 1. Send every [`Input`] through totem; feed each delivered one to
//!    [`Scheduler::handle`] with the message's agreed timestamp: a time
//!    carried in the message (so every node passes the same value), never
//!    decreasing in delivery order. Wall-clock nanoseconds since the UNIX
//!    epoch (kept monotone at delivery) make the log read `12:01:03.250 UTC`. A
//!    configuration change is one [`Input::Membership`] carrying the quorum
//!    computed for it; [`Input::Quorum`] is for quorum changes without one.
//! 2. After each call, run [`Scheduler::drain_actions`] (only this node's
//!    work) through the agents and send each outcome back as
//!    [`Input::Result`] quoting the action's op id. A status check reports
//!    only failures. Stopping a vm also kills an incoming migration instance.
//! 3. Call [`Scheduler::handle_timeout`] at [`Scheduler::poll_deadline`]
//!    (local clock: status checks).
//! 4. On the node [`Scheduler::tick_sender`] names, send [`Input::Tick`] once
//!    [`Scheduler::recheck_due`] has passed (failed starts expire).
//! 5. A joining node gets a member's [`Scheduler::snapshot`], taken just
//!    before that member handles the Membership input that adds the joiner;
//!    the joiner builds [`Scheduler::from_snapshot`] and handles that
//!    Membership and every later input.
//! 6. Clean shutdown: send [`Input::Leave`], wait until
//!    [`Scheduler::ready_to_leave`] is true for the local node, then leave
//!    totem; the others do not fence it.
//! 7. Show [`Scheduler::view`] (clustat) and [`Scheduler::poll_event`] (the
//!    log: why each move happened); answer a submitted [`Request`] with the
//!    `Result` that `handle` returned for it.
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
