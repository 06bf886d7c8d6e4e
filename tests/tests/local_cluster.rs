//! `replicator cluster`, the README's first quick-start command, run as the
//! real binary: it starts every node's MariaDB configured as the replicator
//! requires and a replicator in front of each, writes a manifest that lets
//! a client connect, replicates a write made on one node to the other,
//! stops cleanly on SIGTERM, and resumes with its data and credentials
//! after a restart (no bootstrap step).

use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::*;
use replicator::local_cluster::Manifest;
use tokio::process::{Child, Command};

/// Every node's replicator log, for failure messages.
fn logs(dir: &Path) -> String {
    (1..=2)
        .map(|n| {
            let path = dir.join(format!("node{n}")).join("replicator.log");
            format!(
                "--- node{n}:\n{}",
                std::fs::read_to_string(path).unwrap_or_default()
            )
        })
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Ports of a test cluster: MariaDB, clients, ordered log.
type Ports = (u16, u16, u16);

async fn start_cluster(
    dir: &Path,
    ports: Ports,
    first_address: &str,
    extra: &[&str],
) -> (Child, Manifest) {
    let (port, client_port, group_port) = ports;
    let _ = std::fs::remove_file(dir.join("cluster.json"));
    let child = Command::new(e2e::binary("replicator"))
        .args(["cluster", "--nodes", "2", "--buffer-pool-size", "32M"])
        .arg("--dir")
        .arg(dir)
        .args([
            "--mariadb-port",
            &port.to_string(),
            "--client-port",
            &client_port.to_string(),
            "--group-port",
            &group_port.to_string(),
            "--first-address",
            first_address,
        ])
        .args(extra)
        .kill_on_drop(true)
        .spawn()
        .expect("run replicator cluster");
    let manifest = e2e::wait_for("cluster.json", Duration::from_secs(120), || {
        Manifest::read(dir).ok()
    })
    .await;
    (child, manifest)
}

/// A client connection to a node's MariaDB directly, or (`through`) to
/// its replicator.
async fn connect(manifest: &Manifest, node: usize, through: bool) -> mysql_async::Conn {
    let address = if through {
        &manifest.nodes[node].client
    } else {
        &manifest.nodes[node].mariadb
    };
    let (host, port) = address.rsplit_once(':').unwrap();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port.parse().unwrap())
        .user(Some(manifest.user.clone()))
        .pass(Some(manifest.password.clone()))
        // mysql_async would otherwise switch to the server's own socket
        // (from @@socket) and bypass the replicator.
        .prefer_socket(false);
    mysql_async::Conn::new(opts)
        .await
        .expect("connect with the manifest's account")
}

async fn stop(mut child: Child, manifest: &Manifest) {
    let pid = child.id().expect("running") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("cluster stops within 60 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit, got {status}");
    for node in &manifest.nodes {
        for program in ["mariadbd", "replicator"] {
            let pid = node.processes[program].pid;
            assert!(
                !pid_alive(pid),
                "{}'s {program} ({pid}) still running",
                node.name
            );
        }
    }
}

/// `SELECT id FROM quickstart.t` through node `n`'s replicator, polled
/// until it returns a row (replication is asynchronous to the reader).
async fn replicated_row(dir: &Path, manifest: &Manifest, n: usize) -> i32 {
    let mut conn = connect(manifest, n, true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row: Result<Option<i32>, _> = conn.query_first("SELECT id FROM quickstart.t").await;
        if let Ok(Some(id)) = row {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {n} did not receive the write: {row:?}\n{}",
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_command_starts_configured_nodes_and_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (
        e2e::ports::free_port(),
        e2e::ports::free_port(),
        e2e::ports::free_port(),
    );
    let port = ports.0;
    let (child, manifest) = start_cluster(dir.path(), ports, "127.0.0.20", &[]).await;
    assert_eq!(manifest.nodes.len(), 2);
    assert_eq!(manifest.nodes[0].mariadb, format!("127.0.0.20:{port}"));
    assert_eq!(manifest.nodes[1].mariadb, format!("127.0.0.21:{port}"));

    let mut server_ids = Vec::new();
    for (n, node) in manifest.nodes.iter().enumerate() {
        let process = &node.processes["mariadbd"];
        assert!(
            pid_alive(process.pid),
            "{} pid {} alive",
            node.name,
            process.pid
        );
        assert!(process.argv[0].ends_with("mariadbd"));
        assert!(pid_alive(node.processes["replicator"].pid));
        let mut conn = connect(&manifest, n, false).await;
        let settings: (String, String, String, String, u32) = conn
            .query_first(
                "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, \
                 @@innodb_snapshot_isolation, @@server_id",
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (&*settings.0, &*settings.1, &*settings.2, &*settings.3),
            ("1", "ROW", "FULL", "1"),
            "{} is configured as the replicator requires",
            node.name
        );
        server_ids.push(settings.4);
        conn.disconnect().await.unwrap();
    }
    assert_ne!(server_ids[0], server_ids[1], "server ids are unique");
    // Written through node1's replicator, read through node2's.
    let mut conn = connect(&manifest, 0, true).await;
    conn.query_drop("CREATE DATABASE quickstart").await.unwrap();
    conn.query_drop("CREATE TABLE quickstart.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO quickstart.t VALUES (42)")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    assert_eq!(replicated_row(dir.path(), &manifest, 1).await, 42);
    stop(child, &manifest).await;

    // A restart reuses the data directory and the client account.
    let (child, again) = start_cluster(dir.path(), ports, "127.0.0.20", &[]).await;
    assert_eq!(again.password, manifest.password);
    assert_eq!(replicated_row(dir.path(), &again, 0).await, 42);
    // Still one cluster: a write on node2 reaches node1.
    let mut conn = connect(&again, 1, true).await;
    conn.query_drop("INSERT INTO quickstart.t VALUES (43)")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    let mut conn = connect(&again, 0, true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: Option<i64> = conn
            .query_first("SELECT COUNT(*) FROM quickstart.t")
            .await
            .unwrap();
        if n == Some(2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "43 not replicated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.disconnect().await.unwrap();
    stop(child, &again).await;
}

/// `replicator cluster status --dir DIR`'s output.
async fn cluster_status(dir: &Path) -> String {
    e2e::output_of(
        Command::new(e2e::binary("replicator"))
            .args(["cluster", "status", "--dir"])
            .arg(dir),
        Duration::from_secs(30),
    )
    .await
}

/// Two data nodes and the arbitrator: the manifest lists garbd as it was
/// started, `cluster status` shows every member, and with one data node's
/// replicator killed the other keeps committing (node + garbd are a
/// quorum) while the status shows the dead one unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_and_an_arbitrator_keep_quorum_and_show_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (
        e2e::ports::free_port(),
        e2e::ports::free_port(),
        e2e::ports::free_port(),
    );
    let (child, manifest) = start_cluster(dir.path(), ports, "127.0.0.30", &["--arbitrator"]).await;
    let garbd = manifest
        .arbitrator
        .as_ref()
        .expect("an arbitrator in the manifest");
    assert_eq!(garbd.group, format!("127.0.0.32:{}", ports.2));
    let process = &garbd.processes["garbd"];
    assert!(pid_alive(process.pid), "garbd runs");
    assert!(process.argv[0].ends_with("garbd"));

    let status = cluster_status(dir.path()).await;
    eprintln!("{status}");
    for node in &manifest.nodes {
        let line = status
            .lines()
            .find(|l| l.starts_with(&node.name))
            .unwrap_or_else(|| panic!("{} listed:\n{status}", node.name));
        assert!(
            line.contains("Primary") && line.contains("Synced"),
            "{line}"
        );
    }
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("garbd") && l.contains("arbitrator"))
    );
    let mut conn = connect(&manifest, 0, true).await;
    let size: Option<(String, String)> = conn
        .query_first("SHOW STATUS LIKE 'wsrep_cluster_size'")
        .await
        .unwrap();
    assert_eq!(
        size.unwrap().1,
        "3",
        "two data nodes and the arbitrator vote"
    );

    // node2's replicator dies: node1 and garbd are still a majority.
    let node2 = manifest.nodes[1].processes["replicator"].pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node2 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    conn.query_drop("CREATE DATABASE quorum").await.unwrap();
    conn.query_drop("CREATE TABLE quorum.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO quorum.t VALUES (1)")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    let status = cluster_status(dir.path()).await;
    eprintln!("{status}");
    let line = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("node1").contains("Primary"), "{status}");
    assert!(line("node2").contains("unreachable"), "{status}");

    let garbd_pid = process.pid;
    stop(child, &manifest).await;
    assert!(!pid_alive(garbd_pid), "garbd stopped with the cluster");
}
