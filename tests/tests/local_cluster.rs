//! `replicator cluster`, the README's first quick-start command, run as the
//! real binary: it starts every node's MariaDB configured as the replicator
//! requires, writes a manifest that lets a client connect, stops cleanly on
//! SIGTERM, and keeps its data and credentials across a restart.

use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::*;
use replicator::local_cluster::Manifest;
use tokio::process::{Child, Command};

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn start_cluster(dir: &Path, port: u16, first_address: &str) -> (Child, Manifest) {
    let _ = std::fs::remove_file(dir.join("cluster.json"));
    let child = Command::new(e2e::binary("replicator"))
        .args(["cluster", "--nodes", "2", "--buffer-pool-size", "32M"])
        .arg("--dir")
        .arg(dir)
        .args([
            "--mariadb-port",
            &port.to_string(),
            "--first-address",
            first_address,
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("run replicator cluster");
    let manifest = e2e::wait_for("cluster.json", Duration::from_secs(120), || {
        Manifest::read(dir).ok()
    })
    .await;
    (child, manifest)
}

async fn connect(manifest: &Manifest, node: usize) -> mysql_async::Conn {
    let (host, port) = manifest.nodes[node].mariadb.rsplit_once(':').unwrap();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port.parse().unwrap())
        .user(Some(manifest.user.clone()))
        .pass(Some(manifest.password.clone()));
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
        let pid = node.processes["mariadbd"].pid;
        assert!(
            !pid_alive(pid),
            "{}'s mariadbd ({pid}) still running",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_command_starts_configured_nodes_and_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = e2e::ports::free_port();
    let (child, manifest) = start_cluster(dir.path(), port, "127.0.0.20").await;
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
        let mut conn = connect(&manifest, n).await;
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
        if n == 0 {
            conn.query_drop("CREATE DATABASE quickstart").await.unwrap();
            conn.query_drop("CREATE TABLE quickstart.t (id INT PRIMARY KEY)")
                .await
                .unwrap();
            conn.query_drop("INSERT INTO quickstart.t VALUES (42)")
                .await
                .unwrap();
        }
        conn.disconnect().await.unwrap();
    }
    assert_ne!(server_ids[0], server_ids[1], "server ids are unique");
    stop(child, &manifest).await;

    // A restart reuses the data directory and the client account.
    let (child, again) = start_cluster(dir.path(), port, "127.0.0.20").await;
    assert_eq!(again.password, manifest.password);
    let mut conn = connect(&again, 0).await;
    let kept: Option<i32> = conn
        .query_first("SELECT id FROM quickstart.t")
        .await
        .unwrap();
    assert_eq!(kept, Some(42));
    conn.disconnect().await.unwrap();
    stop(child, &again).await;
}
