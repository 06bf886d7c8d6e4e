//! Settings of a group member, with the defaults an operator gets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// PEM files for mutual TLS between members: every member presents
/// `cert` (signed by `ca`, valid for the host part of its advertised
/// address — an IP SAN for an IP address) and accepts only peers whose
/// certificate `ca` signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

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
    /// Where this member's clients connect (`host:port`), shown to the
    /// others; empty for an arbitrator.
    pub client_address: String,
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
    /// Bytes of log kept on disk at most (whole segments; the segment being
    /// written is always kept). Whichever of the two limits is reached first
    /// bounds the window. Default 1 GiB.
    pub retention_bytes: u64,
    /// Whole segments last written longer ago than this are purged too
    /// (the segment being written is always kept); 0 = no age limit.
    /// Default 0.
    pub retention_age_s: u64,
    /// How often the retention window is enforced. Default 10 s.
    pub purge_interval_ms: u64,
    /// A member that asked to pause proposals (flow control) and then falls
    /// silent stops holding the cluster after this long. Default 2 s.
    pub flow_control_lease_ms: u64,
    /// Mutual TLS between members; `None` = plain TCP (trusted network).
    pub tls: Option<TlsFiles>,
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
            client_address: String::new(),
            data_dir: data_dir.into(),
            arbitrator: false,
            heartbeat_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            retention_entries: 100_000,
            retention_bytes: 1 << 30,
            retention_age_s: 0,
            purge_interval_ms: 10_000,
            flow_control_lease_ms: 2000,
            tls: None,
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

    pub fn purge_interval(&self) -> Duration {
        Duration::from_millis(self.purge_interval_ms.max(1))
    }

    pub fn flow_control_lease(&self) -> Duration {
        Duration::from_millis(self.flow_control_lease_ms.max(1))
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
            // The retention task decides when to take a snapshot (a
            // position only) and what to purge; openraft does neither alone.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            purge_batch_size: 1,
            install_snapshot_timeout: self.rpc_timeout_ms,
            ..Default::default()
        }
        .validate()
    }
}
