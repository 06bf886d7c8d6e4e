//! The ordered log: total order and membership for the replicator and the
//! arbitrator. Knows nothing of MySQL.
//!
//! # Layout
//!
//! To come with the ordered-log issue: `log_store` (segmented append-only
//! log file with checksums and group commit), `raft` (openraft state kept
//! inside this crate), `transport` (tonic gRPC with cluster admission),
//! `membership` and primary-component status, and the public API
//! (`propose`, committed-entry stream, `read_index`, join/leave).
