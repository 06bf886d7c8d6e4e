//! Settings of a group member, with the defaults an operator gets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a member runs. Timeouts are in milliseconds.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The cluster's name; a member of another cluster is refused.
    pub cluster_name: String,
    /// Shared secret every member must know (never sent in clear: members
    /// present a digest of it).
    pub secret: String,
    /// Where this member's node-to-node RPC server listens.
    pub listen: SocketAddr,
    /// The address other members use to reach it (`host:port`); defaults to
    /// `listen`.
    pub advertise: Option<String>,
    /// Holds the log, the vote and the member's identity.
    pub data_dir: PathBuf,
    /// An arbitrator votes and stores the log but has no database.
    pub arbitrator: bool,
    /// Leader heartbeat interval. Default 100 ms.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range
    /// starts an election; a leader without a quorum ack for the maximum
    /// stops being primary. Default 1000–2000 ms.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Committed entries kept in the log for members that lag behind (IST);
    /// a member further behind needs a full state transfer. Default 100,000.
    pub retention_entries: u64,
    /// Size at which a log segment file is closed. Default 64 MiB.
    pub segment_bytes: u64,
    /// Deadline for one node-to-node RPC. Default 2 s.
    pub rpc_timeout_ms: u64,
}

impl GroupConfig {
    pub fn new(
        cluster_name: impl Into<String>,
        secret: impl Into<String>,
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            secret: secret.into(),
            listen,
            advertise: None,
            data_dir: data_dir.into(),
            arbitrator: false,
            heartbeat_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            retention_entries: 100_000,
            segment_bytes: 64 << 20,
            rpc_timeout_ms: 2000,
        }
    }

    pub fn advertise_address(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    pub fn election_timeout_max(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms)
    }

    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }

    pub(crate) fn raft_config(&self) -> Result<openraft::Config, openraft::ConfigError> {
        openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            enable_pre_vote: Some(true),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.retention_entries.max(1)),
            max_in_snapshot_log_to_keep: self.retention_entries,
            purge_batch_size: 256,
            install_snapshot_timeout: self.rpc_timeout_ms,
            ..Default::default()
        }
        .validate()
    }
}
