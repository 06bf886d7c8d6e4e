//! Command-line flags for every group setting, shared by the binaries that
//! run a member (`garbd`, `replicator`, test drivers), so each setting has
//! one name and one documented default everywhere. Only turns flags into a
//! [`GroupConfig`]; no behaviour lives here.

use std::path::PathBuf;

use crate::config::{GroupConfig, TlsFiles};

/// Timing, retention and TLS flags of a group member.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupArgs {
    /// Leader heartbeat interval, ms.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in
    /// [min, max] ms starts an election; a member cut off from the quorum
    /// stops being primary within max. Must match across the cluster.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout_min_ms: u64,
    #[arg(long, default_value_t = 2000)]
    pub election_timeout_max_ms: u64,
    /// Deadline of one node-to-node RPC, ms.
    #[arg(long, default_value_t = 2000)]
    pub rpc_timeout_ms: u64,
    /// Committed entries kept for members that fall behind (IST window).
    #[arg(long, default_value_t = 100_000)]
    pub retention_entries: u64,
    /// Bytes of log kept on disk at most (whole segments).
    #[arg(long, default_value_t = 1 << 30)]
    pub retention_bytes: u64,
    /// How often the retention window is enforced, ms.
    #[arg(long, default_value_t = 10_000)]
    pub purge_interval_ms: u64,
    /// Size at which a log segment file is closed, bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub segment_bytes: u64,
    /// Mutual TLS between members: the cluster CA (PEM). Requires
    /// --tls-cert and --tls-key; every member must use TLS or none.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This member's certificate (PEM), valid for its advertised host.
    #[arg(long, requires = "tls_ca")]
    pub tls_cert: Option<PathBuf>,
    /// This member's private key (PEM).
    #[arg(long, requires = "tls_ca")]
    pub tls_key: Option<PathBuf>,
}

impl GroupArgs {
    /// The TLS files, if TLS was asked for.
    pub fn tls(&self) -> Option<TlsFiles> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// Apply these flags to `config`.
    pub fn apply(&self, config: &mut GroupConfig) {
        config.heartbeat_ms = self.heartbeat_ms;
        config.election_timeout_min_ms = self.election_timeout_min_ms;
        config.election_timeout_max_ms = self.election_timeout_max_ms;
        config.rpc_timeout_ms = self.rpc_timeout_ms;
        config.retention_entries = self.retention_entries;
        config.retention_bytes = self.retention_bytes;
        config.purge_interval_ms = self.purge_interval_ms;
        config.segment_bytes = self.segment_bytes;
        config.tls = self.tls();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        group: GroupArgs,
    }

    #[test]
    fn defaults_match_the_config_defaults() {
        let cli = Cli::parse_from(["x"]);
        let mut config = GroupConfig::new("c", "s", "127.0.0.1:1".parse().unwrap(), "/d");
        let before = format!("{config:?}");
        cli.group.apply(&mut config);
        assert_eq!(format!("{config:?}"), before);
    }

    #[test]
    fn tls_needs_all_three_files() {
        assert!(Cli::try_parse_from(["x", "--tls-ca", "ca.pem"]).is_err());
        assert!(Cli::try_parse_from(["x", "--tls-cert", "c.pem"]).is_err());
        let cli = Cli::try_parse_from([
            "x",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(cli.group.tls().unwrap().key, PathBuf::from("k.pem"));
    }
}
