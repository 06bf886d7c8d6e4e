//! Command-line flags for every group setting, shared by the binaries that
//! run a member (`garbd`, `replicator`, test drivers), so each setting has
//! one name and one documented default everywhere. Only turns flags into a
//! [`GroupConfig`]; no behaviour lives here.

use std::path::PathBuf;

use crate::config::{GroupConfig, TlsFiles};

/// Timing, retention and TLS flags of a group member. Every field is
/// optional: what is not given keeps [`GroupConfig`]'s default (the one
/// place defaults live). Also readable from a TOML table (`[group]`).
#[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupArgs {
    /// Leader heartbeat interval, ms [default: 100].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// A follower that hears no leader for a random time in
    /// [min, max] ms starts an election; a member cut off from the quorum
    /// stops being primary within max. Must match across the cluster
    /// [default: 1000 and 2000].
    #[arg(long)]
    pub election_timeout_min_ms: Option<u64>,
    #[arg(long)]
    pub election_timeout_max_ms: Option<u64>,
    /// Deadline of one node-to-node RPC, ms [default: 2000].
    #[arg(long)]
    pub rpc_timeout_ms: Option<u64>,
    /// Committed entries kept for members that fall behind (IST window)
    /// [default: 100000].
    #[arg(long)]
    pub retention_entries: Option<u64>,
    /// Bytes of log kept on disk at most (whole segments) [default: 1 GiB].
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// Also purge whole log segments last written longer ago than this,
    /// seconds; 0 = no age limit [default: 0].
    #[arg(long)]
    pub retention_age_s: Option<u64>,
    /// How often the retention window is enforced, ms [default: 10000].
    #[arg(long)]
    pub purge_interval_ms: Option<u64>,
    /// Size at which a log segment file is closed, bytes [default: 64 MiB].
    #[arg(long)]
    pub segment_bytes: Option<u64>,
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

    /// Apply the flags that were given to `config`.
    pub fn apply(&self, config: &mut GroupConfig) {
        let set = |field: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut config.heartbeat_ms, self.heartbeat_ms);
        set(
            &mut config.election_timeout_min_ms,
            self.election_timeout_min_ms,
        );
        set(
            &mut config.election_timeout_max_ms,
            self.election_timeout_max_ms,
        );
        set(&mut config.rpc_timeout_ms, self.rpc_timeout_ms);
        set(&mut config.retention_entries, self.retention_entries);
        set(&mut config.retention_bytes, self.retention_bytes);
        set(&mut config.retention_age_s, self.retention_age_s);
        set(&mut config.purge_interval_ms, self.purge_interval_ms);
        set(&mut config.segment_bytes, self.segment_bytes);
        if self.tls().is_some() {
            config.tls = self.tls();
        }
    }

    /// These flags, with `fallback`'s values where these have none
    /// (command line over file).
    pub fn or(self, fallback: GroupArgs) -> GroupArgs {
        GroupArgs {
            heartbeat_ms: self.heartbeat_ms.or(fallback.heartbeat_ms),
            election_timeout_min_ms: self
                .election_timeout_min_ms
                .or(fallback.election_timeout_min_ms),
            election_timeout_max_ms: self
                .election_timeout_max_ms
                .or(fallback.election_timeout_max_ms),
            rpc_timeout_ms: self.rpc_timeout_ms.or(fallback.rpc_timeout_ms),
            retention_entries: self.retention_entries.or(fallback.retention_entries),
            retention_bytes: self.retention_bytes.or(fallback.retention_bytes),
            retention_age_s: self.retention_age_s.or(fallback.retention_age_s),
            purge_interval_ms: self.purge_interval_ms.or(fallback.purge_interval_ms),
            segment_bytes: self.segment_bytes.or(fallback.segment_bytes),
            tls_ca: self.tls_ca.or(fallback.tls_ca),
            tls_cert: self.tls_cert.or(fallback.tls_cert),
            tls_key: self.tls_key.or(fallback.tls_key),
        }
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
