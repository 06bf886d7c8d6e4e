//! `replicator cluster`: a local cluster on this machine, for trying the
//! product and for tests.
//!
//! Owns the layout of a cluster directory (`DIR/nodeN/…`), the start and
//! stop of every node's processes, and `DIR/cluster.json`, the manifest that
//! tools and tests read. Each node gets its own loopback address
//! (127.0.0.2, 127.0.0.3, …) as if it were its own host.
//!
//! What a node runs today: its MariaDB server, configured as the replicator
//! requires (see [`crate::mariadb_server`]). The replicator sidecar and the
//! arbitrator join each node's entry in the manifest as they are built;
//! until then the servers do not replicate to each other, and the command
//! says so when it starts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::mariadb_server::{MariadbServer, ServerConfig};

/// The account clients use on every node.
pub const CLIENT_USER: &str = "app";

/// How to lay out the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub dir: PathBuf,
    /// MariaDB's port on every node's address.
    pub mariadb_port: u16,
    /// The first node's address; node N gets this plus N-1.
    pub first_address: Ipv4Addr,
    pub buffer_pool_size: String,
}

/// One process of a node, as started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// One node in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// `host:port` of the node's MariaDB server.
    pub mariadb: String,
    /// Keyed by program name (`mariadbd`, later `replicator`).
    pub processes: BTreeMap<String, ProcessInfo>,
}

/// `DIR/cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub user: String,
    pub password: String,
    pub nodes: Vec<NodeInfo>,
}

impl Manifest {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// A running local cluster.
pub struct LocalCluster {
    manifest: Manifest,
    servers: Vec<MariadbServer>,
}

/// The client password: made once per cluster directory, kept in
/// `DIR/client-password` (mode 0600) so a restarted cluster keeps it.
fn client_password(dir: &Path) -> Result<String> {
    let path = dir.join("client-password");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let password: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    std::fs::write(&path, &password).with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(password)
}

impl LocalCluster {
    /// Start every node (reusing data left in `dir` by an earlier run) and
    /// write the manifest.
    pub async fn start(options: &ClusterOptions) -> Result<Self> {
        anyhow::ensure!(
            (1..=9).contains(&options.nodes),
            "--nodes must be between 1 and 9, not {}",
            options.nodes
        );
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("creating {}", options.dir.display()))?;
        let dir = options.dir.canonicalize()?;
        let password = client_password(&dir)?;
        let mut cluster = LocalCluster {
            manifest: Manifest {
                user: CLIENT_USER.into(),
                password: password.clone(),
                nodes: Vec::new(),
            },
            servers: Vec::new(),
        };
        for n in 1..=options.nodes {
            let name = format!("node{n}");
            let address = Ipv4Addr::from(u32::from(options.first_address) + (n as u32 - 1));
            let mut config =
                ServerConfig::new(dir.join(&name).join("mariadb"), options.mariadb_port);
            config.bind_address = address.to_string();
            config.server_id = n as u32;
            config.buffer_pool_size = options.buffer_pool_size.clone();
            let command = config.command_line()?;
            tracing::info!(node = %name, %address, "starting MariaDB");
            let server = match MariadbServer::start(config).await {
                Ok(server) => server,
                Err(e) => {
                    cluster.stop().await;
                    return Err(e).with_context(|| format!("starting {name}'s MariaDB"));
                }
            };
            if let Err(e) = ensure_client_account(&server, &password).await {
                cluster.servers.push(server);
                cluster.stop().await;
                return Err(e).with_context(|| format!("creating the client account on {name}"));
            }
            let mut processes = BTreeMap::new();
            processes.insert(
                "mariadbd".to_string(),
                ProcessInfo {
                    pid: server.pid().unwrap_or(0),
                    argv: std::iter::once(command.program.to_string())
                        .chain(command.args)
                        .collect(),
                    env: command.env.into_iter().collect(),
                },
            );
            cluster.manifest.nodes.push(NodeInfo {
                name,
                mariadb: format!("{address}:{}", options.mariadb_port),
                processes,
            });
            cluster.servers.push(server);
        }
        // Readers poll for the file: make it appear complete or not at all.
        let path = Manifest::path(&dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&cluster.manifest)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(cluster)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Stop every node cleanly, last started first.
    pub async fn stop(self) {
        for (server, node) in self
            .servers
            .into_iter()
            .rev()
            .zip(self.manifest.nodes.iter().rev())
        {
            tracing::info!(node = %node.name, "stopping MariaDB");
            if let Err(e) = server.stop().await {
                tracing::warn!(node = %node.name, error = %e, "MariaDB did not stop cleanly");
            }
        }
    }
}

async fn ensure_client_account(server: &MariadbServer, password: &str) -> Result<()> {
    // Account statements take no placeholders; the password is generated
    // alphanumeric, and anything else is refused rather than quoted.
    anyhow::ensure!(
        !password.is_empty() && password.chars().all(|c| c.is_ascii_alphanumeric()),
        "the client password must be ASCII letters and digits"
    );
    let mut conn = server.root_conn().await?;
    for statement in [
        format!("CREATE USER IF NOT EXISTS '{CLIENT_USER}'@'%' IDENTIFIED BY '{password}'"),
        format!("ALTER USER '{CLIENT_USER}'@'%' IDENTIFIED BY '{password}'"),
        format!("GRANT ALL PRIVILEGES ON *.* TO '{CLIENT_USER}'@'%' WITH GRANT OPTION"),
    ] {
        conn.query_drop(statement).await?;
    }
    conn.disconnect().await?;
    Ok(())
}
