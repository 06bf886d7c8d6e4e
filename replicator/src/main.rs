//! The `replicator` command line.
//!
//! - `replicator run` — the sidecar: serve MySQL clients in front of the
//!   local MariaDB as a member of a cluster (see `replicator::node`).
//! - `replicator cluster` — start a local cluster (see
//!   `replicator::local_cluster`) and keep it running until Ctrl-C/SIGTERM;
//!   `replicator cluster status` prints a running one's members table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use replicator::config::RunSettings;
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
    /// Run the sidecar beside the local MariaDB: clients connect here, and
    /// their transactions are replicated through the cluster. Every setting
    /// can come from `--config FILE` (TOML, same names with underscores)
    /// and be overridden by its flag.
    Run {
        /// A TOML file of settings.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Box<RunSettings>,
    },
    /// Start a local cluster on this machine, one loopback address per node,
    /// and keep it running until Ctrl-C or SIGTERM (`cluster status` shows
    /// a running one).
    #[command(args_conflicts_with_subcommands = true)]
    Cluster {
        #[command(subcommand)]
        action: Option<ClusterAction>,
        #[command(flatten)]
        start: ClusterOptions,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Print the members table of a running local cluster: each node's
    /// name, client address, cluster status, state, role in the ordered
    /// log, term, last committed and applied seqno, and apply queue.
    Status {
        /// The cluster's directory (holds `cluster.json`).
        #[arg(long, default_value = "local-cluster")]
        dir: PathBuf,
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
        Command::Run { config, settings } => {
            let file = match &config {
                Some(path) => RunSettings::from_file(path)?,
                None => RunSettings::default(),
            };
            let config = settings.resolve(file)?;
            let shutdown = async {
                if let Err(e) = shutdown_signal().await {
                    tracing::error!(error = %e, "signal handling failed");
                }
            };
            replicator::node::run(config, shutdown, |listen| {
                tracing::info!(%listen, "accepting MySQL clients");
            })
            .await
            .context("replicator stopped")?;
            Ok(())
        }
        Command::Cluster {
            action: Some(ClusterAction::Status { dir }),
            ..
        } => {
            let manifest = replicator::local_cluster::Manifest::read(&dir)?;
            print!(
                "{}",
                replicator::local_cluster::status_table(&manifest).await
            );
            Ok(())
        }
        Command::Cluster {
            action: None,
            start: options,
        } => {
            let cluster = LocalCluster::start(&options).await?;
            let m = cluster.manifest();
            println!(
                "Local cluster of {} node(s) is up; manifest in {}",
                m.nodes.len(),
                options.dir.join("cluster.json").display()
            );
            for node in &m.nodes {
                let (host, port) = node.client.rsplit_once(':').unwrap_or((&node.client, ""));
                println!(
                    "  {}: mariadb -h {host} -P {port} -u {} -p'{}'   (health: http://{}/health)",
                    node.name, m.user, m.password, node.http
                );
            }
            if let Some(a) = &m.arbitrator {
                println!(
                    "  {}: arbitrator (votes, no database) at {}",
                    a.name, a.group
                );
            }
            println!(
                "Every node is writable: each runs MariaDB behind the replicator; connect to \
                 any address above. `replicator cluster status --dir {}` shows the members.",
                options.dir.display()
            );
            println!("Ctrl-C stops the cluster.");
            shutdown_signal().await?;
            cluster.stop().await;
            Ok(())
        }
    }
}
