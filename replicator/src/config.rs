//! The sidecar's settings: one TOML file (`--config FILE`) whose every key
//! can be overridden on the command line (`--key value`, same names with
//! dashes), and the defaults an operator gets. Only turns input into a
//! checked [`RunConfig`]; starts nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use group::GroupArgs;

use crate::proxy::Backend;

/// Settings as given (file or command line); unset = default.
#[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    /// Where MySQL clients connect [default: 0.0.0.0:3306].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where `/health` and `/metrics` are served over HTTP [default: not
    /// served].
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// The local MariaDB's socket [default: /run/mysqld/mysqld.sock].
    #[arg(long)]
    pub mariadb_socket: Option<PathBuf>,
    /// The local MariaDB over TCP (`host:port`) instead of its socket.
    #[arg(long, conflicts_with = "mariadb_socket")]
    pub mariadb_address: Option<String>,
    /// The replicator's own MariaDB account [default: root, over the
    /// socket]. It needs: SELECT, REPLICATION SLAVE, BINLOG MONITOR, and
    /// ALL on the `replicator` schema; XA RECOVER needs it too.
    #[arg(long)]
    pub user: Option<String>,
    /// Its password [default: none].
    #[arg(long, env = "REPLICATOR_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// The replicator's own state: the ordered log, identity, position
    /// [default: /var/lib/replicator].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The cluster's name [default: replicator].
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// The cluster's shared secret (required).
    #[arg(long, env = "REPLICATOR_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Where node-to-node RPCs are served [default: 0.0.0.0:4567].
    #[arg(long)]
    pub group_listen: Option<SocketAddr>,
    /// The address other nodes use for this one [default: group_listen].
    #[arg(long)]
    pub advertise: Option<String>,
    /// Make this node the first of a new cluster (a new data directory).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub bootstrap: Option<bool>,
    /// Join the cluster of these nodes (`host:port,…`) (a new data directory).
    #[arg(long, value_delimiter = ',')]
    pub join: Option<Vec<String>>,
    /// server_id of the replicator's binlog connection; must differ from
    /// every server's [default: 4000000000 + low bits of the node id].
    #[arg(long)]
    pub capture_server_id: Option<u32>,
    /// Largest transaction replicated, bytes of row events [default: 256 MiB].
    #[arg(long)]
    pub max_writeset_bytes: Option<usize>,
    /// How long a commit waits for the cluster, ms [default: 30000].
    #[arg(long)]
    pub commit_timeout_ms: Option<u64>,
    /// Certification window, seqnos [default: 16384]. Must be the same on
    /// every node, and below the log retention.
    #[arg(long)]
    pub certification_window: Option<u64>,
    /// Replicate tables without a primary key with table-level conflict
    /// detection, instead of refusing writes to them [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub allow_tables_without_pk: Option<bool>,
    /// Connections applying other nodes' write-sets in parallel
    /// [default: 4].
    #[arg(long)]
    pub apply_threads: Option<usize>,
    /// Set each node's auto_increment_increment/offset from the cluster
    /// membership, so inserts on different nodes never draw the same
    /// value (Galera's wsrep_auto_increment_control) [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub auto_increment_control: Option<bool>,
    /// On SIGTERM, how long sessions inside a transaction may take to
    /// finish it before their connections are closed (and their
    /// transactions rolled back), ms [default: 5000].
    #[arg(long)]
    pub stop_grace_ms: Option<u64>,
    #[command(flatten)]
    pub group: GroupArgs,
}

/// Complete, checked settings of `replicator run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub backend: Backend,
    pub user: String,
    pub password: Option<String>,
    pub data_dir: PathBuf,
    pub cluster_name: String,
    pub secret: String,
    pub group_listen: SocketAddr,
    pub advertise: Option<String>,
    pub bootstrap: bool,
    pub join: Vec<String>,
    pub capture_server_id: Option<u32>,
    pub max_writeset_bytes: usize,
    pub commit_timeout: Duration,
    pub certification_window: u64,
    pub allow_tables_without_pk: bool,
    pub apply_threads: usize,
    pub auto_increment_control: bool,
    pub stop_grace: Duration,
    pub group: GroupArgs,
}

/// Settings that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl RunSettings {
    /// Read a TOML file of settings.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// These settings over `file`'s (command line wins), with defaults for
    /// the rest, checked.
    pub fn resolve(self, file: RunSettings) -> Result<RunConfig, ConfigError> {
        let backend = match (
            self.mariadb_address.or(file.mariadb_address),
            self.mariadb_socket.or(file.mariadb_socket),
        ) {
            (Some(address), _) => Backend::Tcp(address),
            (None, Some(socket)) => Backend::Unix(socket),
            (None, None) => Backend::Unix(PathBuf::from("/run/mysqld/mysqld.sock")),
        };
        let secret = self.secret.or(file.secret).ok_or_else(|| {
            ConfigError::Invalid(
                "no cluster secret: set `secret` in the config file, --secret, or \
                 REPLICATOR_SECRET"
                    .into(),
            )
        })?;
        let group = self.group.or(file.group);
        let certification_window = self
            .certification_window
            .or(file.certification_window)
            .unwrap_or(16_384);
        let retention = group.retention_entries.unwrap_or(100_000);
        if certification_window == 0 || certification_window >= retention {
            return Err(ConfigError::Invalid(format!(
                "certification_window ({certification_window}) must be above 0 and below the \
                 log's retention_entries ({retention})"
            )));
        }
        let bootstrap = self.bootstrap.or(file.bootstrap).unwrap_or(false);
        let join = self.join.or(file.join).unwrap_or_default();
        if bootstrap && !join.is_empty() {
            return Err(ConfigError::Invalid(
                "--bootstrap and --join exclude each other".into(),
            ));
        }
        Ok(RunConfig {
            http_listen: self.http_listen.or(file.http_listen),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "0.0.0.0:3306".parse().expect("valid default")),
            backend,
            user: self.user.or(file.user).unwrap_or_else(|| "root".into()),
            password: self.password.or(file.password),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/replicator")),
            cluster_name: self
                .cluster_name
                .or(file.cluster_name)
                .unwrap_or_else(|| "replicator".into()),
            secret,
            group_listen: self
                .group_listen
                .or(file.group_listen)
                .unwrap_or_else(|| "0.0.0.0:4567".parse().expect("valid default")),
            advertise: self.advertise.or(file.advertise),
            bootstrap,
            join,
            capture_server_id: self.capture_server_id.or(file.capture_server_id),
            max_writeset_bytes: self
                .max_writeset_bytes
                .or(file.max_writeset_bytes)
                .unwrap_or(256 << 20),
            commit_timeout: Duration::from_millis(
                self.commit_timeout_ms
                    .or(file.commit_timeout_ms)
                    .unwrap_or(30_000),
            ),
            certification_window,
            allow_tables_without_pk: self
                .allow_tables_without_pk
                .or(file.allow_tables_without_pk)
                .unwrap_or(false),
            apply_threads: self
                .apply_threads
                .or(file.apply_threads)
                .unwrap_or(4)
                .max(1),
            auto_increment_control: self
                .auto_increment_control
                .or(file.auto_increment_control)
                .unwrap_or(true),
            stop_grace: Duration::from_millis(
                self.stop_grace_ms.or(file.stop_grace_ms).unwrap_or(5_000),
            ),
            group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunSettings,
    }

    #[test]
    fn the_command_line_wins_over_the_file_and_defaults_fill_the_rest() {
        let file: RunSettings = toml::from_str(
            r#"
            listen = "127.0.0.1:4000"
            secret = "from-file"
            user = "repl"
            [group]
            heartbeat_ms = 50
            retention_entries = 500000
            "#,
        )
        .unwrap();
        let cli = Cli::parse_from(["x", "--listen", "127.0.0.1:5000", "--heartbeat-ms", "70"]);
        let config = cli.run.resolve(file).unwrap();
        assert_eq!(config.listen.port(), 5000);
        assert_eq!(config.secret, "from-file");
        assert_eq!(config.user, "repl");
        assert_eq!(config.group.heartbeat_ms, Some(70));
        assert_eq!(config.group.retention_entries, Some(500_000));
        assert_eq!(config.certification_window, 16_384);
        assert_eq!(
            config.backend,
            Backend::Unix(PathBuf::from("/run/mysqld/mysqld.sock"))
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let none = RunSettings::default();
        let err = none.clone().resolve(RunSettings::default()).unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
        let err = toml::from_str::<RunSettings>("lisen = \"x\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let cli = Cli::parse_from(["x", "--secret", "s", "--certification-window", "200000"]);
        let err = cli.run.resolve(RunSettings::default()).unwrap_err();
        assert!(err.to_string().contains("retention"), "{err}");
        let cli = Cli::parse_from(["x", "--secret", "s", "--bootstrap", "--join", "a:1"]);
        assert!(cli.run.resolve(RunSettings::default()).is_err());
    }
}
