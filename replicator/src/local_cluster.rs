//! `replicator cluster`: a local cluster on this machine.
