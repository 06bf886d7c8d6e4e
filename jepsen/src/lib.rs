//! Jepsen-style consistency testing for the replicator and for MariaDB
//! Galera Cluster.
//!
//! # Layout
//!
//! - [`history`] — the record of a test: one [`history::Event`] per
//!   operation invocation or completion (`invoke`, `ok`, `fail`, `info`),
//!   with its process, node and time, stored as JSON lines.
//!
//! To come (see the consistency-test issue): hosts and the fault injector
//! (kill, pause, nftables partitions), workloads (list-append, bank, set,
//! register) and their checkers, and the `jepsen` command line.

pub mod history;
