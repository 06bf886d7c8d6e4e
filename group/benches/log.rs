//! Ordered-log throughput and commit latency: 3 voters on loopback
//! (127.0.0.2–4), each with its own log on disk (fdatasync on every
//! commit), 1 KiB entries, 1/16/64 concurrent proposers on the leader and
//! on a follower (which forwards to the leader).
//!
//! `cargo bench -p group --bench log` — the last line is one JSON object.
//! The baseline, measured in the same run, is a single durable append to
//! the same disk (`LogStore::append` + `sync`, one at a time): what one
//! fdatasync costs here.

use std::time::{Duration, Instant};

use group::log_store::{LogStore, LogStoreOptions};
use group::{GroupConfig, GroupMember};
use hdrhistogram::Histogram;

const ENTRY: usize = 1024;
const RUN: Duration = Duration::from_secs(3);

struct Cell {
    origin: &'static str,
    proposers: usize,
    entries_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run(member: &GroupMember, proposers: usize) -> (f64, Histogram<u64>) {
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for _ in 0..proposers {
        let member = member.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let started = Instant::now();
                member
                    .propose(vec![7u8; ENTRY], Duration::from_secs(10))
                    .await
                    .expect("proposal commits");
                hist.record(started.elapsed().as_micros() as u64).unwrap();
                n += 1;
            }
            (n, hist)
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        let (n, h) = t.await.unwrap();
        total += n;
        hist.add(h).unwrap();
    }
    (total as f64 / started.elapsed().as_secs_f64(), hist)
}

fn fsync_baseline(dir: &std::path::Path) -> f64 {
    let (mut store, _) = LogStore::open(dir.join("baseline"), LogStoreOptions::default()).unwrap();
    let payload = vec![7u8; ENTRY];
    let started = Instant::now();
    let n = 2000u64;
    for i in 1..=n {
        store.append([(i, payload.as_slice())]).unwrap();
        store.sync().unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    group::init_logging("warn");
    let dir = tempfile::Builder::new()
        .prefix("group-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let durable_appends = fsync_baseline(dir.path());
    eprintln!("baseline: {durable_appends:.0} durable single appends/s on this disk");

    let port = 26000 + (std::process::id() % 1000) as u16;
    let mut members = Vec::new();
    for i in 0..3 {
        let listen = format!("127.0.0.{}:{port}", 2 + i).parse().unwrap();
        let mut config = GroupConfig::new(
            "bench",
            "bench-secret",
            listen,
            dir.path().join(format!("n{i}")),
        );
        config.election_timeout_min_ms = 1000;
        config.election_timeout_max_ms = 2000;
        let (member, mut rx) = GroupMember::start(config, 0).await.unwrap();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        members.push(member);
    }
    eprintln!("bootstrapping");
    members[0].bootstrap().await.unwrap();
    let mut primary = members[0].primary();
    primary.wait_for(|p| p.is_primary()).await.unwrap();
    eprintln!("joining");
    for m in &members[1..] {
        m.join(&[format!("127.0.0.2:{port}")]).await.unwrap();
    }
    while members[0]
        .status()
        .members
        .iter()
        .filter(|m| m.voter)
        .count()
        < 3
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for m in &members {
        m.primary().wait_for(|p| p.is_primary()).await.unwrap();
    }
    eprintln!("cluster of 3 ready");
    let leader_id = members[0].status().leader.expect("leader");
    let leader = members.iter().find(|m| m.node_id() == leader_id).unwrap();
    let follower = members.iter().find(|m| m.node_id() != leader_id).unwrap();
    // Warm up connections and caches.
    run(leader, 8).await;

    let mut cells = Vec::new();
    for (origin, member) in [("leader", leader), ("follower", follower)] {
        for proposers in [1, 16, 64] {
            let (rate, hist) = run(member, proposers).await;
            let cell = Cell {
                origin,
                proposers,
                entries_per_sec: rate,
                p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
            };
            eprintln!(
                "{:>8} {:>3} proposers: {:>8.0} entries/s ({:.2}x one durable append), p50 {:.2} ms, p99 {:.2} ms",
                cell.origin,
                cell.proposers,
                cell.entries_per_sec,
                cell.entries_per_sec / durable_appends,
                cell.p50_ms,
                cell.p99_ms
            );
            cells.push(cell);
        }
    }
    for m in &members {
        m.shutdown().await;
    }
    let json: Vec<String> = cells
        .iter()
        .map(|c| {
            format!(
                "{{\"origin\":\"{}\",\"proposers\":{},\"entries_per_sec\":{:.0},\"vs_durable_append\":{:.2},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
                c.origin,
                c.proposers,
                c.entries_per_sec,
                c.entries_per_sec / durable_appends,
                c.p50_ms,
                c.p99_ms
            )
        })
        .collect();
    println!(
        "{{\"bench\":\"group-log\",\"entry_bytes\":{ENTRY},\"voters\":3,\"durable_appends_per_sec\":{durable_appends:.0},\"cells\":[{}]}}",
        json.join(",")
    );
}
