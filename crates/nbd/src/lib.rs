//! NBD server: the fixed-newstyle protocol as a sans-IO state machine ([`ServerConn`]), and a tokio
//! driver ([`Server`]) that serves a block [`Backend`] over TCP or a Unix socket.
//!
//! Supported: fixed newstyle handshake with NO_ZEROES, options GO, INFO (EXPORT, NAME, DESCRIPTION,
//! BLOCK_SIZE), EXPORT_NAME, LIST, ABORT; STARTTLS, STRUCTURED_REPLY, meta contexts, extended headers
//! and unknown options are answered with `NBD_REP_ERR_UNSUP`. Transmission with simple replies: READ,
//! WRITE, FLUSH, TRIM, WRITE_ZEROES (NO_HOLE), DISC, FUA. Requests up to 32 MiB.

pub mod client;
pub mod driver;
pub mod proto;
pub mod server;

pub use client::{Client, Reply};
pub use driver::{execute, serve, Backend, ConnSummary, Done, Export, FileBackend, Server};
pub use server::{
    BlockOp, CloseReason, Errno, Event, ExportInfo, OpHandle, OpKind, ServerConfig, ServerConn,
    Stats,
};
