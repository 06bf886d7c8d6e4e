//! The replicator: a sidecar beside an unmodified MariaDB that makes it a
//! writable member of a multi-master cluster (see `docs/architecture.md`).
//!
//! # Layout
//!
//! - [`capture`] — the binlog tailer: each `XA PREPARE` group becomes a
//!   write-set's row events and certification keys.
//! - [`certify`] — the certifier: pure, deterministic first-committer-wins
//!   over the ordered stream of write-sets, with deterministic purge and the
//!   dependencies parallel appliers wait for.
//! - [`keys`] — certification keys: scope fingerprints, the row → table →
//!   database hierarchy, and value normalization per collation (weight
//!   tables generated from MariaDB itself).
//! - [`writeset`] — the write-set and log-entry domain types, and their one
//!   conversion to and from the wire schema in `proto`.
//! - [`mariadb_server`] — runs a MariaDB server configured as the
//!   replicator requires (private data dir, port, ROW binlog, snapshot
//!   isolation); used by `replicator cluster` and by the tests.
//! - [`local_cluster`] — `replicator cluster`: starts a local cluster of
//!   managed servers and writes `cluster.json`.
//!
//! - [`proxy`] — the MySQL proxy clients connect to: framing, pass-through
//!   authentication, response tracking, statement classification.
//!
//! - [`node`] — a running node: start-up checks, recovery, the commit
//!   pipeline (ordering, certification, commit order) behind the proxy.
//! - [`config`] — `replicator run`'s settings (TOML file + flags).
//!
//! - [`apply`] — applies other nodes' write-sets (row events, total-order
//!   statements) with the applied position in the same transaction.
//!
//! Still to come (see the issues): `admin`.

pub mod apply;
pub mod capture;
pub mod certify;
pub mod config;
pub mod failpoint;
pub mod http;
pub mod keys;
pub mod local_cluster;
pub mod mariadb_server;
pub mod node;
pub mod proxy;
pub mod writeset;
