//! `garbd`, the arbitrator: a voting member of the ordered log that stores
//! the log but has no database, so that two data nodes keep quorum when one
//! of them dies.
//!
//! It is a `group` member with an empty state machine: committed entries
//! are counted and dropped. When it finds itself leading, it hands
//! leadership to a data node that has the whole log (see `group`).
//!
//! - `garbd --group NAME --address HOST:PORT[,…] --secret S` joins the
//!   cluster (or rejoins it, from its data directory) and runs until
//!   SIGTERM/Ctrl-C, when it leaves the voting membership and exits.
//! - SIGUSR1 prints its view of the cluster to the log.
//! - `garbd --status --address HOST:PORT …` prints a running member's view.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use group::{GroupArgs, GroupConfig, GroupMember};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "garbd",
    version,
    about = "Arbitrator for the replicator's ordered log"
)]
struct Cli {
    /// The cluster's name.
    #[arg(long)]
    group: String,
    /// Members to join through, `host:port` separated by commas.
    #[arg(long, value_delimiter = ',', required = true)]
    address: Vec<String>,
    /// The cluster's shared secret.
    #[arg(long, env = "GROUP_SECRET", hide_env_values = true)]
    secret: String,
    /// Where this arbitrator serves node-to-node RPCs.
    #[arg(long, default_value = "0.0.0.0:4567")]
    listen: SocketAddr,
    /// The address other members use to reach it, if not `--listen`.
    #[arg(long)]
    advertise: Option<String>,
    /// Holds its log and identity.
    #[arg(long, default_value = "garbd-data")]
    data_dir: PathBuf,
    /// Print the view of the member at the first `--address` and exit.
    #[arg(long)]
    status: bool,
    #[command(flatten)]
    settings: GroupArgs,
}

fn print_status(status: &group::MemberStatus) {
    tracing::info!(
        node = status.node_id,
        primary = ?status.primary,
        role = status.role,
        term = status.term,
        leader = ?status.leader,
        committed = status.committed,
        applied = status.applied,
        paused_by = ?status.flow_control_paused_by,
        "arbitrator view"
    );
    for m in &status.members {
        tracing::info!(
            node = m.node_id,
            address = %m.address,
            voter = m.voter,
            arbitrator = m.arbitrator,
            matched = ?m.matched,
            "member"
        );
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    group::init_logging("info,openraft=warn");
    let cli = Cli::parse();
    if cli.status {
        let status = GroupMember::remote_status(
            &cli.address[0],
            &cli.group,
            &cli.secret,
            cli.settings.tls().as_ref(),
            Duration::from_secs(5),
        )
        .await
        .with_context(|| format!("asking {} for its status", cli.address[0]))?;
        println!(
            "node {} role {} primary {}{} term {} leader {} committed {} applied {}",
            status.node_id,
            status.role,
            status.primary,
            if status.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", status.reason)
            },
            status.term,
            status.leader_id,
            status.committed,
            status.applied
        );
        for m in status.members {
            println!(
                "  member {} {} {}{}{}",
                m.node_id,
                m.address,
                if m.role == 1 { "voter" } else { "learner" },
                if m.arbitrator { " arbitrator" } else { "" },
                if m.leader { " leader" } else { "" }
            );
        }
        return Ok(());
    }
    let mut config = GroupConfig::new(&cli.group, &cli.secret, cli.listen, &cli.data_dir);
    config.advertise = cli.advertise;
    config.arbitrator = true;
    cli.settings.apply(&mut config);
    let (member, mut committed) = GroupMember::start(config, 0).await?;
    // The arbitrator applies nothing.
    tokio::spawn(async move { while committed.recv().await.is_some() {} });
    if !member.is_member()
        && let Err(e) = member.join(&cli.address).await
    {
        member.shutdown().await;
        bail!("joining {}: {e}", cli.address.join(","));
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            _ = usr1.recv() => print_status(&member.status()),
            _ = term.recv() => break,
            r = tokio::signal::ctrl_c() => { r?; break; }
        }
    }
    tracing::info!("leaving the cluster");
    if let Err(e) = member.leave(Duration::from_secs(10)).await {
        tracing::warn!(error = %e, "could not leave the voting membership cleanly");
    }
    member.shutdown().await;
    Ok(())
}
