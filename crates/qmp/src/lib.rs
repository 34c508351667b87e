//! QEMU Machine Protocol client: a sans-IO codec and a tokio connection.
//!
//! [`Session`] is the protocol as a state machine: feed it the bytes read from
//! the QMP socket with [`Session::handle_bytes`], queue commands with
//! [`Session::execute`], and drain what to write ([`Session::poll_transmit`]),
//! command results ([`Session::poll_reply`]) and asynchronous events
//! ([`Session::poll_event`]). It performs the greeting and the
//! `qmp_capabilities` negotiation itself and holds user commands back until the
//! negotiation succeeded. It never blocks, owns no socket and needs no clock.
//!
//! [`QmpClient`] drives a [`Session`] over a Unix socket with tokio.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod session;

pub use client::QmpClient;
pub use session::{
    CommandId, ErrorClass, Greeting, QmpEvent, Reply, Session, SessionState, SessionStats,
    MAX_EVENTS, MAX_LINE, MAX_PENDING,
};

/// Errors of the QMP session and client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QmpError {
    /// QEMU answered the command with an error reply.
    #[error("QEMU refused {command}: {class}: {desc}")]
    Command {
        /// The command that failed.
        command: String,
        /// The error class QEMU reported.
        class: ErrorClass,
        /// QEMU's human readable description.
        desc: String,
    },
    /// The socket could not be opened or failed while in use.
    #[error(
        "QMP socket {path}: {message} (is QEMU running with -qmp unix:{path},server=on,wait=off?)"
    )]
    Io {
        /// Socket path.
        path: String,
        /// What the operating system said.
        message: String,
    },
    /// The peer closed the connection (QEMU exited or the socket was closed).
    #[error("QMP connection closed (QEMU exited or closed the monitor)")]
    Closed,
    /// No answer within the allowed time.
    #[error("QMP {what} timed out after {ms} ms")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit in milliseconds.
        ms: u64,
    },
    /// The peer broke the protocol (e.g. no greeting, or negotiation refused).
    #[error("QMP protocol violation: {0}")]
    Protocol(String),
    /// Too many commands are waiting for an answer.
    #[error("too many QMP commands in flight ({0}); wait for answers before sending more")]
    Busy(usize),
}
