//! Jepsen-style consistency testing for the replicator and for MariaDB
//! Galera Cluster.
//!
//! # Layout
//!
//! - [`history`] — the record of a test: one [`history::Event`] per
//!   operation invocation or completion (`invoke`, `ok`, `fail`, `info`),
//!   with its process, node and time, stored as JSON lines.
//! - [`op`] — pairs each invocation with its completion (one operation at a
//!   time per process); the shared first step of every checker.
//! - [`verdict`] — what a checker concludes: [`verdict::Verdict`] (`valid`,
//!   anomalies with their kind, explanation and the operations involved,
//!   counters), serialized as JSON; [`verdict::CheckError`] for malformed
//!   histories.
//! - [`graph`] — typed-edge graphs: Tarjan SCCs and a constrained
//!   shortest-cycle search, for the transactional checkers.
//! - [`append`] — the list-append workload's value shape and its Elle-style
//!   checker: version orders from reads, ww/wr/rw (and process/real-time)
//!   dependency graph, G0, G1a, G1b, G1c, G-single, G2-item, lost update,
//!   internal and incompatible-order anomalies, against a consistency model
//!   (snapshot isolation by default).
//! - [`bank`] — the bank workload's value shapes and checker: every read of
//!   all balances sums to the constant total, no negative balance.
//! - [`set`] — the set workload's value shapes and checker: acknowledged
//!   adds survive in every node's final read, no phantom or unexpected
//!   elements, indeterminate adds counted as recovered.
//!
//! The checkers are pure: they take a history in memory and return a
//! verdict, and never talk to a database.
//!
//! To come (see the consistency-test issue): hosts and the fault injector
//! (kill, pause, nftables partitions), the workloads' clients, the register
//! and final-state checkers, the report, and the `jepsen` command line.

pub mod append;
pub mod bank;
pub mod graph;
pub mod history;
pub mod op;
pub mod set;
pub mod verdict;
