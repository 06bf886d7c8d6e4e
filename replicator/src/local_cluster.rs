//! `replicator cluster`: a local cluster on this machine, for trying the
//! product and for tests.
//!
//! Owns the layout of a cluster directory (`DIR/nodeN/…`), the start and
//! stop of every node's processes, and `DIR/cluster.json`, the manifest that
//! tools and tests read. Each node gets its own loopback address
//! (127.0.0.2, 127.0.0.3, …) as if it were its own host.
//!
//! What a node runs: its MariaDB server, configured as the replicator
//! requires (see [`crate::mariadb_server`]), and the replicator sidecar in
//! front of it (`replicator run`, a child process), where clients
//! connect. The first start bootstraps node1 and joins the others to it;
//! later starts resume every node from its data directory (no bootstrap
//! step), all at once, since a node serves clients only with a quorum.

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

/// How to lay out the cluster (the flags of `replicator cluster`).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterOptions {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Where the nodes keep their data; `DIR/cluster.json` describes them.
    #[arg(long, default_value = "local-cluster")]
    pub dir: PathBuf,
    /// MariaDB's port on each node's address.
    #[arg(long, default_value_t = 13306)]
    pub mariadb_port: u16,
    /// Address of node1; node N gets the N-th address from here.
    #[arg(long, default_value = "127.0.0.2")]
    pub first_address: Ipv4Addr,
    /// InnoDB buffer pool of each node's MariaDB.
    #[arg(long, default_value = "256M")]
    pub buffer_pool_size: String,
    /// Where clients connect to a node's replicator, on its address.
    #[arg(long, default_value_t = 3306)]
    pub client_port: u16,
    /// The ordered log's port on each node's address.
    #[arg(long, default_value_t = 4567)]
    pub group_port: u16,
    /// `/health` and `/metrics` on each node's address.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Also run an arbitrator (garbd), on the address after the last
    /// node's: two data nodes then keep quorum when one is down.
    #[arg(long)]
    pub arbitrator: bool,
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
    /// `host:port` where clients connect (the node's replicator).
    pub client: String,
    /// `host:port` of the node's `/health` and `/metrics`.
    pub http: String,
    /// Keyed by program name (`mariadbd`, `replicator`).
    pub processes: BTreeMap<String, ProcessInfo>,
}

/// `DIR/cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub user: String,
    pub password: String,
    pub nodes: Vec<NodeInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arbitrator: Option<ArbitratorInfo>,
}

/// The arbitrator in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArbitratorInfo {
    pub name: String,
    /// `host:port` of its group endpoint.
    pub group: String,
    /// Keyed by program name (`garbd`).
    pub processes: BTreeMap<String, ProcessInfo>,
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
    garbd: Option<tokio::process::Child>,
}

/// The client password: made once per cluster directory, kept in
/// `DIR/client-password` (mode 0600) so a restarted cluster keeps it.
fn client_password(dir: &Path) -> Result<String> {
    kept_secret(&dir.join("client-password"), &[], 20)
}

/// A random alphanumeric secret of `len` characters kept in `path` (mode
/// 0600): read from there, or from the first of `earlier` that holds one,
/// or made and written.
fn kept_secret(path: &Path, earlier: &[PathBuf], len: usize) -> Result<String> {
    for candidate in std::iter::once(path).chain(earlier.iter().map(PathBuf::as_path)) {
        if let Ok(s) = std::fs::read_to_string(candidate)
            && !s.trim().is_empty()
        {
            return Ok(s.trim().to_string());
        }
    }
    let secret: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    std::fs::write(path, &secret).with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(secret)
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
                arbitrator: None,
            },
            servers: Vec::new(),
            replicators: Vec::new(),
            garbd: None,
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
                client: format!("{address}:{}", options.client_port),
                http: format!("{address}:{}", options.http_port),
                processes,
            });
            cluster.servers.push(server);
        }
        if let Err(e) = cluster.start_replicators(&dir, options).await {
            cluster.stop().await;
            return Err(e);
        }
        if options.arbitrator
            && let Err(e) = cluster.start_arbitrator(&dir, options).await
        {
            cluster.stop().await;
            return Err(e);
        }
        if let Err(e) = cluster.wait_synced().await {
            cluster.stop().await;
            return Err(e);
        }
        // Readers poll for the file: make it appear complete or not at all.
        let path = Manifest::path(&dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&cluster.manifest)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(cluster)
    }

    /// Start every node's replicator. A new cluster: node1 bootstraps,
    /// then each other node joins it, one at a time. An existing one:
    /// every node resumes, all started before any is waited for.
    async fn start_replicators(&mut self, dir: &Path, options: &ClusterOptions) -> Result<()> {
        let secret = cluster_secret(dir)?;
        let node_address = |n: usize| Ipv4Addr::from(u32::from(options.first_address) + n as u32);
        let seed = format!("{}:{}", node_address(0), options.group_port);
        let mut pending = Vec::new();
        for n in 0..self.servers.len() {
            let name = self.manifest.nodes[n].name.clone();
            let node_dir = dir.join(&name);
            let new = !node_dir
                .join("replicator")
                .join("group")
                .join("identity.json")
                .exists();
            let role = match (new, n) {
                (true, 0) => Role::Bootstrap,
                (true, _) => Role::Join(seed.clone()),
                (false, _) => Role::Resume,
            };
            let listen = self.manifest.nodes[n].client.clone();
            let addresses = Addresses {
                client: listen.clone(),
                http: self.manifest.nodes[n].http.clone(),
                group: format!("{}:{}", node_address(n), options.group_port),
            };
            let (child, info) =
                spawn_replicator(&node_dir, &self.servers[n], &addresses, &secret, &role)
                    .with_context(|| format!("starting {name}'s replicator"))?;
            self.replicators.push(child);
            self.manifest.nodes[n]
                .processes
                .insert("replicator".to_string(), info);
            pending.push((n, node_dir, listen));
            // A new member needs the others running before it can join.
            if role != Role::Resume {
                for (n, node_dir, listen) in pending.drain(..) {
                    wait_serving(&mut self.replicators[n], &node_dir, &listen).await?;
                }
            }
        }
        for (n, node_dir, listen) in pending {
            wait_serving(&mut self.replicators[n], &node_dir, &listen).await?;
        }
        Ok(())
    }

    /// Start the arbitrator on the address after the last node's and wait
    /// until every node counts it as a voter.
    async fn start_arbitrator(&mut self, dir: &Path, options: &ClusterOptions) -> Result<()> {
        let secret = cluster_secret(dir)?;
        let node_address = |n: usize| Ipv4Addr::from(u32::from(options.first_address) + n as u32);
        let group = format!(
            "{}:{}",
            node_address(self.servers.len()),
            options.group_port
        );
        let seeds: Vec<String> = (0..self.servers.len())
            .map(|n| format!("{}:{}", node_address(n), options.group_port))
            .collect();
        let garbd_dir = dir.join("garbd");
        std::fs::create_dir_all(&garbd_dir)?;
        let program = std::env::current_exe()?
            .parent()
            .context("the replicator binary's directory")?
            .join("garbd");
        anyhow::ensure!(
            program.exists(),
            "--arbitrator needs the garbd binary next to this one ({})",
            program.display()
        );
        let argv = vec![
            program.display().to_string(),
            "--group".into(),
            "replicator".into(),
            "--address".into(),
            seeds.join(","),
            "--listen".into(),
            group.clone(),
            "--data-dir".into(),
            garbd_dir.join("data").display().to_string(),
        ];
        let (child, info) = spawn_logged(
            argv,
            ("GROUP_SECRET", &secret),
            &garbd_dir.join("garbd.log"),
        )
        .context("spawning garbd")?;
        self.garbd = Some(child);
        self.manifest.arbitrator = Some(ArbitratorInfo {
            name: "garbd".into(),
            group,
            processes: BTreeMap::from([("garbd".to_string(), info)]),
        });
        let voters = (self.servers.len() + 1).to_string();
        self.wait_every_node("count the arbitrator as a voter", |s| {
            s.get("wsrep_cluster_size") == Some(&voters)
                && s.get("wsrep_group_membership_settled").map(String::as_str) == Some("ON")
        })
        .await
    }

    /// Wait until every node reports itself Synced.
    async fn wait_synced(&mut self) -> Result<()> {
        self.wait_every_node("be Synced", |s| {
            s.get("wsrep_local_state_comment").map(String::as_str) == Some("Synced")
        })
        .await
    }

    async fn wait_every_node(
        &mut self,
        what: &str,
        done: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        for node in &self.manifest.nodes {
            loop {
                if let Ok(status) = node_status(&self.manifest, node).await
                    && done(&status)
                {
                    break;
                }
                if let Some(garbd) = self.garbd.as_mut()
                    && let Some(exit) = garbd.try_wait()?
                {
                    anyhow::bail!("garbd exited with {exit}; see its log in DIR/garbd");
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{} did not {what} within 120 s",
                    node.name
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Stop every node cleanly, last started first (the arbitrator first).
    pub async fn stop(mut self) {
        let children = self
            .garbd
            .take()
            .into_iter()
            .chain(self.replicators.drain(..).rev());
        for mut child in children.collect::<Vec<_>>() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let wait = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait());
            if !matches!(wait.await, Ok(Ok(_))) {
                tracing::warn!("a process did not stop within 30 s; killing it");
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

/// A node's `wsrep%` status, through its replicator with the client
/// account (what any MySQL client would see).
pub async fn node_status(manifest: &Manifest, node: &NodeInfo) -> Result<BTreeMap<String, String>> {
    let (host, port) = node
        .client
        .rsplit_once(':')
        .with_context(|| format!("{}: client address {}", node.name, node.client))?;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_string())
        .tcp_port(port.parse().context("client port")?)
        .user(Some(manifest.user.clone()))
        .pass(Some(manifest.password.clone()))
        .prefer_socket(false);
    let probe = async {
        let mut conn = mysql_async::Conn::new(opts).await?;
        let rows: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'wsrep%'").await?;
        let _ = conn.disconnect().await;
        Ok::<_, mysql_async::Error>(rows.into_iter().collect())
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), probe)
        .await
        .with_context(|| format!("{} did not answer within 3 s", node.name))?
        .with_context(|| format!("asking {} for its status", node.name))
}

/// The members table of `replicator cluster status`: one line per node,
/// from each node's own status (a node that does not answer says so).
pub async fn status_table(manifest: &Manifest) -> String {
    let mut out = format!(
        "{:<8} {:<21} {:<12} {:<12} {:<10} {:>6} {:>10} {:>10} {:>6}\n",
        "NAME", "CLIENT", "CLUSTER", "STATE", "ROLE", "TERM", "COMMITTED", "APPLIED", "QUEUE"
    );
    for node in &manifest.nodes {
        match node_status(manifest, node).await {
            Ok(s) => {
                let v = |k: &str| s.get(k).cloned().unwrap_or_else(|| "-".into());
                out.push_str(&format!(
                    "{:<8} {:<21} {:<12} {:<12} {:<10} {:>6} {:>10} {:>10} {:>6}\n",
                    node.name,
                    node.client,
                    v("wsrep_cluster_status"),
                    v("wsrep_local_state_comment"),
                    v("wsrep_group_role"),
                    v("wsrep_group_term"),
                    v("wsrep_last_committed"),
                    v("wsrep_group_applied"),
                    v("wsrep_local_recv_queue"),
                ));
            }
            Err(e) => out.push_str(&format!(
                "{:<8} {:<21} unreachable: {}\n",
                node.name,
                node.client,
                e.root_cause()
            )),
        }
    }
    if let Some(a) = &manifest.arbitrator {
        out.push_str(&format!(
            "{:<8} {:<21} arbitrator (no database), group address {}\n",
            a.name, "-", a.group
        ));
    }
    out
}

/// How a node's replicator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Bootstrap,
    /// Join through this group address.
    Join(String),
    /// Resume from its data directory.
    Resume,
}

/// The secret every member of this cluster shares: made once, kept in
/// `DIR/cluster-secret` (clusters made by earlier versions kept it in
/// node1's directory).
fn cluster_secret(dir: &Path) -> Result<String> {
    kept_secret(
        &dir.join("cluster-secret"),
        &[dir.join("node1").join("cluster-secret")],
        32,
    )
}

/// Where a node's replicator listens.
struct Addresses {
    client: String,
    http: String,
    group: String,
}

/// Spawn `replicator run` for a node.
fn spawn_replicator(
    node_dir: &Path,
    server: &MariadbServer,
    addresses: &Addresses,
    secret: &str,
    role: &Role,
) -> Result<(tokio::process::Child, ProcessInfo)> {
    let data_dir = node_dir.join("replicator");
    let mut argv = vec![
        std::env::current_exe()?.display().to_string(),
        "run".into(),
        "--listen".into(),
        addresses.client.clone(),
        "--http-listen".into(),
        addresses.http.clone(),
        "--mariadb-socket".into(),
        server.config().socket().display().to_string(),
        "--user".into(),
        "root".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--group-listen".into(),
        addresses.group.clone(),
    ];
    match role {
        Role::Bootstrap => argv.push("--bootstrap".into()),
        Role::Join(seed) => argv.extend(["--join".to_string(), seed.clone()]),
        Role::Resume => {}
    }
    std::fs::create_dir_all(&data_dir)?;
    spawn_logged(
        argv,
        ("REPLICATOR_SECRET", secret),
        &node_dir.join("replicator.log"),
    )
    .context("spawning the replicator")
}

/// Spawn `argv` with the cluster secret in environment variable
/// `secret.0`, output appended to `log`; the manifest's record of it
/// names where the secret is kept instead of the secret itself.
fn spawn_logged(
    argv: Vec<String>,
    secret: (&str, &str),
    log: &Path,
) -> Result<(tokio::process::Child, ProcessInfo)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env(secret.0, secret.1)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let info = ProcessInfo {
        pid: child.id().unwrap_or(0),
        argv,
        env: BTreeMap::from([(secret.0.to_string(), "(DIR/cluster-secret)".to_string())]),
    };
    Ok((child, info))
}

/// Wait until a node's replicator accepts clients at `listen` (it does
/// once it has caught up with the cluster).
async fn wait_serving(
    child: &mut tokio::process::Child,
    node_dir: &Path,
    listen: &str,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the replicator exited with {status}; see {}",
                node_dir.join("replicator.log").display()
            );
        }
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the replicator did not accept clients within 120 s; see {}",
            node_dir.join("replicator.log").display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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
