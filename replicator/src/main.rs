//! The `replicator` command line.
//!
//! - `replicator cluster` — start a local cluster (see
//!   `replicator::local_cluster`) and keep it running until Ctrl-C/SIGTERM.
//!
//! The sidecar itself (`replicator run`) arrives with the proxy.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use replicator::local_cluster::{ClusterOptions, LocalCluster};

#[derive(Parser)]
#[command(
    name = "replicator",
    version,
    about = "Multi-master replication for MariaDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster on this machine, one loopback address per node,
    /// and keep it running until Ctrl-C or SIGTERM.
    Cluster {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Where the nodes keep their data; `DIR/cluster.json` describes them.
        #[arg(long, default_value = "local-cluster")]
        dir: PathBuf,
        /// MariaDB's port on each node's address.
        #[arg(long, default_value_t = 13306)]
        mariadb_port: u16,
        /// Address of node1; node N gets the N-th address from here.
        #[arg(long, default_value = "127.0.0.2")]
        first_address: Ipv4Addr,
        /// InnoDB buffer pool of each node's MariaDB.
        #[arg(long, default_value = "256M")]
        buffer_pool_size: String,
    },
}

async fn shutdown_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    group::init_logging("info");
    match Cli::parse().command {
        Command::Cluster {
            nodes,
            dir,
            mariadb_port,
            first_address,
            buffer_pool_size,
        } => {
            let options = ClusterOptions {
                nodes,
                dir,
                mariadb_port,
                first_address,
                buffer_pool_size,
            };
            let cluster = LocalCluster::start(&options).await?;
            let m = cluster.manifest();
            println!(
                "Local cluster of {} node(s) is up; manifest in {}",
                m.nodes.len(),
                options.dir.join("cluster.json").display()
            );
            for node in &m.nodes {
                let (host, port) = node.mariadb.rsplit_once(':').unwrap_or((&node.mariadb, ""));
                println!(
                    "  {}: mariadb -h {host} -P {port} -u {} -p'{}'",
                    node.name, m.user, m.password
                );
            }
            println!(
                "This build runs each node's MariaDB, configured for replication; the \
                 replicator sidecar is not part of it yet, so the nodes do not replicate."
            );
            println!("Ctrl-C stops the cluster.");
            shutdown_signal().await?;
            cluster.stop().await;
            Ok(())
        }
    }
}
