//! Test driver for the ordered log: one `group` member in its own process,
//! controlled over stdin and reporting over stdout as JSON lines, so that
//! multi-process tests can kill it with SIGKILL like any real node.
//!
//! `group-node --name N --secret S --listen ADDR --data-dir DIR
//!             [--bootstrap | --join ADDR,…] [--arbitrator] [group flags]`
//!
//! stdin: `propose <id>` | `status` | `pause` | `resume` | `leave`
//! stdout: `{"event":"committed","seqno":…,"id":…}`,
//!         `{"event":"proposed","id":…,"seqno":…}`,
//!         `{"event":"propose_failed","id":…,"error":…}`,
//!         `{"event":"primary","primary":…,"reason":…}`, `{"event":"status",…}`,
//!         `{"event":"left"}`.
//! Proposals are the decimal id as bytes. SIGTERM = graceful leave.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use group::{Committed, GroupArgs, GroupConfig, GroupMember, Primary};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    name: String,
    #[arg(long)]
    secret: String,
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    bootstrap: bool,
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    #[arg(long)]
    arbitrator: bool,
    /// Act like a consumer that keeps its position: remember the last
    /// delivered seqno in DATA_DIR/consumer-position and ask only for what
    /// follows it on restart (as the replicator does).
    #[arg(long)]
    keep_position: bool,
    #[command(flatten)]
    settings: GroupArgs,
}

fn emit(value: serde_json::Value) {
    println!("{value}");
}

#[tokio::main]
async fn main() -> Result<()> {
    group::init_logging("info,openraft=warn");
    let cli = Cli::parse();
    let mut config = GroupConfig::new(&cli.name, &cli.secret, cli.listen, &cli.data_dir);
    config.arbitrator = cli.arbitrator;
    cli.settings.apply(&mut config);
    let position_file = cli
        .keep_position
        .then(|| cli.data_dir.join("consumer-position"));
    let position: u64 = match &position_file {
        Some(path) => std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
        None => 0,
    };
    let (member, mut committed) = GroupMember::start(config, position).await?;
    tokio::spawn(async move {
        while let Some(item) = committed.recv().await {
            let (seqno, event) = match item {
                Committed::Entry { seqno, data } => (
                    seqno,
                    json!({"event": "committed", "seqno": seqno, "id": String::from_utf8_lossy(&data)}),
                ),
                Committed::SnapshotInstalled { seqno } => {
                    (seqno, json!({"event": "snapshot", "seqno": seqno}))
                }
                Committed::Marker { .. } => continue,
            };
            // The position is kept before the entry is reported, as a real
            // consumer commits before it acknowledges.
            if let Some(path) = &position_file {
                std::fs::write(path, seqno.to_string()).expect("write the consumer position");
            }
            emit(event);
        }
    });
    let mut primary = member.primary();
    tokio::spawn(async move {
        loop {
            let p = primary.borrow_and_update().clone();
            let (is, reason) = match p {
                Primary::Yes => (true, String::new()),
                Primary::No(r) => (false, r),
            };
            emit(json!({"event": "primary", "primary": is, "reason": reason}));
            if primary.changed().await.is_err() {
                return;
            }
        }
    });
    if !member.is_member() {
        if cli.bootstrap {
            member.bootstrap().await?;
        } else if !cli.join.is_empty() {
            member.join(&cli.join).await?;
        }
    }
    emit(json!({"event": "started", "node_id": member.node_id()}));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["propose", id] => {
                        let member = member.clone();
                        let id = id.to_string();
                        tokio::spawn(async move {
                            match member.propose(id.clone().into_bytes(), Duration::from_secs(5)).await {
                                Ok(seqno) => emit(json!({"event": "proposed", "id": id, "seqno": seqno})),
                                Err(e) => emit(json!({"event": "propose_failed", "id": id, "error": e.to_string()})),
                            }
                        });
                    }
                    ["status"] => {
                        let s = member.status();
                        emit(json!({
                            "event": "status", "node_id": s.node_id, "role": s.role, "term": s.term,
                            "leader": s.leader, "committed": s.committed, "applied": s.applied,
                            "primary": s.primary.is_primary(),
                            "voters": s.members.iter().filter(|m| m.voter).map(|m| m.node_id).collect::<Vec<_>>(),
                            "paused_by": s.flow_control_paused_by,
                            "membership_settled": s.membership_settled,
                        }));
                    }
                    ["pause"] => member.pause_proposals(true),
                    ["resume"] => member.pause_proposals(false),
                    ["leave"] => break,
                    _ => emit(json!({"event": "error", "error": format!("unknown command {line:?}")})),
                }
            }
            _ = term.recv() => break,
        }
    }
    member.leave(Duration::from_secs(10)).await?;
    emit(json!({"event": "left"}));
    member.shutdown().await;
    // The runtime would wait forever for the blocking stdin reader.
    std::process::exit(0)
}
