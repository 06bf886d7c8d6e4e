//! Test driver for the ordered log: one `group` member in its own process,
//! controlled over stdin and reporting over stdout as JSON lines, so that
//! multi-process tests can kill it with SIGKILL like any real node.
//!
//! `group-node --name N --secret S --listen ADDR --data-dir DIR
//!             [--bootstrap | --join ADDR,…] [--arbitrator]`
//!
//! stdin: `propose <id>` | `status` | `leave`
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
use group::{Committed, GroupConfig, GroupMember, Primary};
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
    config.heartbeat_ms = 50;
    config.election_timeout_min_ms = 300;
    config.election_timeout_max_ms = 600;
    config.rpc_timeout_ms = 1000;
    let (member, mut committed) = GroupMember::start(config, 0).await?;
    tokio::spawn(async move {
        while let Some(item) = committed.recv().await {
            match item {
                Committed::Entry { seqno, data } => emit(
                    json!({"event": "committed", "seqno": seqno, "id": String::from_utf8_lossy(&data)}),
                ),
                Committed::SnapshotInstalled { seqno } => {
                    emit(json!({"event": "snapshot", "seqno": seqno}))
                }
            }
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
                        }));
                    }
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
