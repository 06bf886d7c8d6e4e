//! `replicator cluster`: a local cluster on this machine, for trying the
//! product and for tests.
//!
//! Owns the layout of a cluster directory (`DIR/nodeN/…`), the start and
//! stop of every node's processes, and `DIR/cluster.json`, the manifest that
//! tools and tests read. Each node gets its own loopback address
//! (127.0.0.2, 127.0.0.3, …) as if it were its own host.
//!
//! What a node runs: its MariaDB server, configured as the replicator
//! requires (see [`crate::mariadb_server`]), and — in a one-node cluster —
//! the replicator sidecar in front of it (`replicator run`, a child
//! process), where clients connect. Nodes of a larger cluster run MariaDB
//! only until applying other nodes' write-sets is built; the command says
//! so when it starts.

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
    /// Where clients connect to each node's replicator (one-node clusters).
    pub client_port: u16,
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
    /// `host:port` where clients connect: the replicator when the node runs
    /// one, else MariaDB itself.
    pub address: String,
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
    replicators: Vec<tokio::process::Child>,
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
            replicators: Vec::new(),
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
            let mut client_address = format!("{address}:{}", options.mariadb_port);
            if options.nodes == 1 {
                let node_dir = dir.join(&name);
                match start_replicator(&node_dir, &server, address, options.client_port).await {
                    Ok((child, info, listen)) => {
                        processes.insert("replicator".to_string(), info);
                        client_address = listen;
                        cluster.replicators.push(child);
                    }
                    Err(e) => {
                        cluster.servers.push(server);
                        cluster.stop().await;
                        return Err(e).with_context(|| format!("starting {name}'s replicator"));
                    }
                }
            }
            cluster.manifest.nodes.push(NodeInfo {
                name,
                mariadb: format!("{address}:{}", options.mariadb_port),
                address: client_address,
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
    pub async fn stop(mut self) {
        for mut child in self.replicators.drain(..).rev() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let wait = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait());
            if !matches!(wait.await, Ok(Ok(_))) {
                tracing::warn!("a replicator did not stop within 30 s; killing it");
                let _ = child.kill().await;
            }
        }
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

/// Start `replicator run` for a node (a one-voter cluster the first time,
/// resumed from its data directory later); returns once clients can
/// connect.
async fn start_replicator(
    node_dir: &Path,
    server: &MariadbServer,
    address: Ipv4Addr,
    client_port: u16,
) -> Result<(tokio::process::Child, ProcessInfo, String)> {
    let data_dir = node_dir.join("replicator");
    let secret_path = node_dir.join("cluster-secret");
    let secret = match std::fs::read_to_string(&secret_path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            let s: String = rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(32)
                .map(char::from)
                .collect();
            std::fs::write(&secret_path, &s)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600))?;
            s
        }
    };
    let listen = format!("{address}:{client_port}");
    let mut argv = vec![
        std::env::current_exe()?.display().to_string(),
        "run".into(),
        "--listen".into(),
        listen.clone(),
        "--mariadb-socket".into(),
        server.config().socket().display().to_string(),
        "--user".into(),
        "root".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--group-listen".into(),
        format!("{address}:4567"),
    ];
    if !data_dir.join("group").join("identity.json").exists() {
        argv.push("--bootstrap".into());
    }
    std::fs::create_dir_all(&data_dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node_dir.join("replicator.log"))?;
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("REPLICATOR_SECRET", &secret)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("spawning the replicator")?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the replicator exited with {status}; see {}",
                node_dir.join("replicator.log").display()
            );
        }
        if tokio::net::TcpStream::connect(&listen).await.is_ok() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the replicator did not accept clients within 60 s; see {}",
            node_dir.join("replicator.log").display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let info = ProcessInfo {
        pid: child.id().unwrap_or(0),
        argv,
        env: BTreeMap::from([(
            "REPLICATOR_SECRET".to_string(),
            "(DIR/nodeN/cluster-secret)".to_string(),
        )]),
    };
    Ok((child, info, listen))
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
