//! The ordered log: total order and membership for the replicator and the
//! arbitrator. Knows nothing of MySQL.
//!
//! # Layout
//!
//! - [`log_store`] — the durable log: segmented append-only files of
//!   checksummed records, group commit by explicit sync, torn-tail recovery,
//!   purge by whole segments, atomic metadata files.
//!
//! To come with the rest of the ordered-log issue: `raft` (openraft state
//! kept inside this crate), `transport` (tonic gRPC with cluster
//! admission), membership and primary-component status, and the public API
//! (`propose`, committed-entry stream, `read_index`, join/leave).

pub mod config;
mod forwarder;
pub mod identity;
pub mod log_store;
mod member;
mod service;
pub mod state_machine;
pub mod storage;
mod transport;
pub mod types;

pub use config::GroupConfig;
pub use member::{GroupError, GroupMember, MemberInfo, MemberStatus, Primary};
pub use state_machine::Committed;
