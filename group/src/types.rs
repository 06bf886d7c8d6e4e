//! The openraft type configuration and the Raft-level data types. Every
//! openraft type stays inside this crate; the public API speaks in seqnos
//! and bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An entry proposed to the log: opaque bytes for the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal of {} bytes", self.0.len())
    }
}

/// What applying an entry returns to its proposer (the seqno is in the log
/// id; nothing else is needed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied;

/// A member as the consensus layer knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// `host:port` of its node-to-node RPC server.
    pub address: String,
    /// An arbitrator stores the log but has no database.
    pub arbitrator: bool,
    /// Where its clients connect (`host:port`; empty for an arbitrator),
    /// for status (`wsrep_incoming_addresses`).
    pub client_address: String,
}

openraft::declare_raft_types!(
    /// The consensus configuration of the ordered log.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = MemberNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = crate::runtime::ConsensusRuntime,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
