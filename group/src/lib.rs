//! The ordered log: total order and membership for the replicator and the
//! arbitrator. Knows nothing of MySQL.
//!
//! # Layout
//!
//! - [`log_store`] — the durable log: segmented append-only files of
//!   checksummed records, group commit by explicit sync, torn-tail recovery,
//!   purge by whole segments, atomic metadata files.
//!
//! - [`storage`] — openraft's log storage over `log_store`: group commit on
//!   a sync thread, vote and purge point in atomically replaced files.
//! - [`state_machine`] — hands committed entries, in order, to the member's
//!   consumer; a Raft snapshot here is only a position ("state transfer
//!   needed up to seqno N").
//! - [`types`] — the openraft type configuration; no openraft type leaves
//!   this crate through the public API.
//! - [`config`] — settings and their defaults; [`settings`] — the same as
//!   command-line flags for the binaries.
//! - [`identity`] — node id, cluster name and UUID, and admission of
//!   requests (name, UUID, secret digest).
//! - `transport` / `service` — node-to-node gRPC: the client side openraft
//!   uses, and the server that admits requests and hands them to Raft or to
//!   the member API.
//! - `forwarder` — batches proposals a follower forwards to the leader.
//! - `flow_control` — the leader's table of members holding proposals.
//! - `retention` — what the log may forget (entries, bytes, interval).
//! - `member` — [`GroupMember`], the public API: start, bootstrap, join,
//!   propose, read index, leave, primary status, status.
//!
//! See `docs/ordered-log.md` for the rules and settings.

pub mod config;
mod flow_control;
mod forwarder;
pub mod identity;
pub mod log_store;
mod member;
mod retention;
pub mod runtime;
mod service;
pub mod settings;
#[cfg(test)]
mod simulation;
pub mod state_machine;
pub mod storage;
mod transport;
pub mod types;

pub use config::{GroupConfig, TlsFiles};
pub use member::{GroupError, GroupMember, MemberInfo, MemberStatus, Primary};
pub use settings::GroupArgs;
pub use state_machine::Committed;

/// Log to stderr with `tracing`, filtered by `RUST_LOG` or else `default`
/// (e.g. `"info,openraft=warn"`). For the binaries built on this crate.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
