//! Wire schema shared by the replicator and the arbitrator.
//!
//! # Layout
//!
//! - `proto/replicator/v1/replicator.proto` — the versioned schema: write-sets,
//!   log entries and the node-to-node RPCs (consensus, proposals, membership,
//!   state transfer). Compatibility rules are at the top of that file.
//! - [`v1`] — the types and tonic clients/servers generated from it by
//!   `build.rs` (protox + tonic-prost-build; no `protoc` needed).
//!
//! This crate holds generated code only. Conversions between these types and
//! the replicator's domain types live in `replicator::writeset`.

/// Generated code for package `replicator.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("replicator.v1");
}
