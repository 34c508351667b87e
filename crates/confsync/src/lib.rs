//! One config for the whole cluster: cluster.conf distribution over totem.
//!
//! [`ConfigSync`] is a sans-IO state machine, one per node. Every member feeds it the
//! same totem-ordered inputs (membership changes, config-sync messages, and the quorum
//! core's view right after each ordered input given to quorum); it hands back messages
//! to multicast ([`ConfSyncMsg`], binary, chunked at 48 KiB), [`Action::WriteConfig`]
//! for the driver and [`Event`]s. See [`ConfigSync`] for the rules.
//!
//! The crate README has the rules, the wiring and the status JSON fields.
//!
//! [`files`] holds the two std-only driver helpers: [`files::write_atomic`] and
//! [`files::check_drift`].
//!
//! Wiring in the node daemon (a layer tag byte in front of `encode()`):
//!
//! ```text
//! totem ConfigurationChange (regular) -> sync.handle_membership(now, ring, members, joined)
//! totem Deliver [TAG_CONFSYNC] body   -> ConfSyncMsg::decode(body) -> sync.handle_message(now, sender, msg)
//! after every ordered input to quorum -> sync.handle_quorum(now, quorum.is_quorate() && !quorum_syncing)
//! admin `config push FILE`            -> sync.push(now, text) -> ticket; answer on Event::PushResult{mine: true}
//! every ~5 s                          -> files::check_drift(path) -> sync.handle_local_file(now, &text)
//! sync.poll_message()                 -> multicast(TAG_CONFSYNC, msg.encode())
//! sync.poll_action() WriteConfig      -> files::write_atomic(path, &text), then reload the other cores
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod files;
mod sync;
pub mod wire;

pub use sync::{
    Action, ConfigSync, Drift, Event, LastReload, MemberState, MemberStatus, Phase, PushError,
    PushOutcome, PushTicket, ReloadCause, StartError, Status,
};
pub use wire::{Announce, ChunkKind, ConfSyncMsg, ConfigHash, DecodeError, TextChunk};
