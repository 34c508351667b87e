//! A virtual power switch for tests and the demo: outlets that run node processes, and the fence_quorate agent that drives it.
//!
//! - [`PowerSwitch`]: outlets by name, each a command line (a node's `quorate node ...`
//!   process, or anything). `on` starts it in its own process group, `off` SIGKILLs the
//!   whole group and answers only once no process of it is left; it stays off.
//! - [`serve_unix`] / [`serve_tcp`]: the line protocol ([`protocol`]): `OFF node1\n` → `OK off\n`.
//! - [`fence_quorate::main_with`]: the FenceAgentAPI agent for it (binary `fence_quorate`;
//!   the `quorate` binary can dispatch to it by argv\[0\]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
mod cli;
pub mod fence_quorate;
pub mod protocol;
mod server;

pub use cli::{run_server, PowerSwitchArgs};
pub use protocol::{PowerState, Request, Response};
pub use server::{serve_tcp, serve_unix, OutletConfig, OutletStatus, PowerSwitch, SwitchError};
