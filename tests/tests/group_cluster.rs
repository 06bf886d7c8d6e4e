//! The ordered log with real processes, each member on its own loopback
//! address: leader crash, quorum loss, the arbitrator, graceful leave,
//! full-cluster restart, and a stranger trying to join.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::group_node::{GroupNode, SECRET, Start, addresses, wait_voters};

async fn cluster(dir: &std::path::Path, name: &str, n: usize) -> (Vec<String>, Vec<GroupNode>) {
    e2e::group_node::cluster(dir, name, n, &[]).await
}

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_leader_crash_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (_addrs, mut nodes) = cluster(dir.path(), "t10", 3).await;
    let mut acked = BTreeSet::new();
    for i in 0..50 {
        let id = format!("a{i}");
        nodes[i % 3]
            .propose(&id, T)
            .await
            .expect("proposal before the crash");
        acked.insert(id);
    }
    let leader_id = nodes[1].status().await["leader"]
        .as_u64()
        .expect("a leader");
    let mut leader_pos = None;
    for (i, node) in nodes.iter().enumerate() {
        let started = node
            .wait_event("started", T, |e| e["event"] == "started")
            .await;
        if started["node_id"].as_u64() == Some(leader_id) {
            leader_pos = Some(i);
        }
    }
    let leader = nodes.remove(leader_pos.expect("leader is one of ours"));
    tracing_note("kill -9 the leader");
    leader.kill().await;

    // Proposals resume on the survivors (after an election).
    for i in 0..50 {
        let id = format!("b{i}");
        let node = &mut nodes[i % 2];
        let mut tries = 0;
        loop {
            match node.propose(&id, T).await {
                Ok(_) => break,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 20, "proposals do not resume: {e}");
                }
            }
        }
        acked.insert(id);
    }
    for node in &nodes {
        for id in &acked {
            node.wait_committed(id, T).await;
        }
        // Same order on both survivors.
    }
    let a = nodes[0].committed();
    let b = nodes[1].committed();
    let common: Vec<_> = a.keys().filter(|k| b.contains_key(k)).collect();
    for seqno in common {
        assert_eq!(
            a[seqno], b[seqno],
            "seqno {seqno} differs between survivors"
        );
    }
}

fn tracing_note(step: &str) {
    eprintln!("--- {step}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_two_nodes_without_arbitrator_lose_primary_when_one_dies() {
    let dir = tempfile::tempdir().unwrap();
    let (_addrs, mut nodes) = cluster(dir.path(), "t20", 2).await;
    nodes[1]
        .propose("x1", T)
        .await
        .expect("commit with both up");
    let dead = nodes.remove(0);
    tracing_note("kill -9 one of two");
    dead.kill().await;
    let survivor = &mut nodes[0];
    survivor.wait_primary(false, Duration::from_secs(5)).await;
    let err = survivor
        .propose("x2", T)
        .await
        .expect_err("a minority must refuse");
    assert!(err.contains("not in the primary component"), "{err}");
    assert!(!survivor.committed().values().any(|v| v == "x2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_arbitrator_keeps_two_nodes_primary() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = addresses(3);
    let mut n0 = GroupNode::start(
        "t30",
        &addrs[0],
        &dir.path().join("n0"),
        Start::Bootstrap,
        &[],
    )
    .await;
    n0.wait_primary(true, T).await;
    let mut n1 = GroupNode::start(
        "t30",
        &addrs[1],
        &dir.path().join("n1"),
        Start::Join(vec![addrs[0].clone()]),
        &[],
    )
    .await;
    n1.wait_primary(true, T).await;
    // The real arbitrator binary.
    let mut garbd = tokio::process::Command::new(e2e::binary("garbd"))
        .args([
            "--group",
            "t30",
            "--secret",
            SECRET,
            "--address",
            &addrs[0],
            "--listen",
            &addrs[2],
        ])
        .args([
            "--election-timeout-min-ms",
            "300",
            "--election-timeout-max-ms",
            "600",
            "--heartbeat-ms",
            "50",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("garbd"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_voters(&mut n0, 3).await;
    n1.propose("before", T).await.unwrap();

    tracing_note("kill -9 node n0");
    n0.kill().await;
    let mut committed_after = 0;
    // A new leader must be elected first; on a loaded machine that can
    // take several election rounds, so the bound is time, not attempts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for i in 0..20 {
        loop {
            match n1.propose(&format!("after{i}"), T).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "survivor + arbitrator must keep committing: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        committed_after += 1;
    }
    n1.wait_primary(true, T).await;
    assert_eq!(committed_after, 20);
    // The arbitrator never leads for long: leadership is handed to n1.
    n1.wait_status("n1 leads", T, |s| s["role"] == "leader")
        .await;
    garbd.start_kill().unwrap();
    garbd.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_graceful_leave_keeps_the_other_node_primary_and_restart_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (addrs, mut nodes) = cluster(dir.path(), "t40", 2).await;
    nodes[0].propose("one", T).await.unwrap();
    let leaver = nodes.remove(1);
    tracing_note("graceful stop of one of two");
    leaver.terminate().await;
    let survivor = &mut nodes[0];
    wait_voters(survivor, 1).await;
    survivor.wait_primary(true, T).await;
    survivor
        .propose("two", T)
        .await
        .expect("a lone remaining voter is primary");
    survivor.propose("three", T).await.unwrap();

    tracing_note("restart it: it rejoins and catches up from the log");
    let back = GroupNode::start(
        "t40",
        &addrs[1],
        &dir.path().join("n1"),
        Start::Join(vec![addrs[0].clone()]),
        &[],
    )
    .await;
    for id in ["one", "two", "three"] {
        back.wait_committed(id, T).await;
    }
    wait_voters(survivor, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_full_cluster_kill_and_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (addrs, mut nodes) = cluster(dir.path(), "t50", 3).await;
    let mut acked = Vec::new();
    for i in 0..30 {
        let id = format!("c{i}");
        nodes[i % 3].propose(&id, T).await.unwrap();
        acked.push(id);
    }
    tracing_note("kill -9 every member");
    for node in nodes.drain(..) {
        node.kill().await;
    }
    tracing_note("restart in reverse order, no bootstrap step");
    for i in (0..3).rev() {
        nodes.push(
            GroupNode::start(
                "t50",
                &addrs[i],
                &dir.path().join(format!("n{i}")),
                Start::Resume,
                &[],
            )
            .await,
        );
    }
    for node in &nodes {
        node.wait_primary(true, T).await;
    }
    let mut tries = 0;
    while nodes[0].propose("after-restart", T).await.is_err() {
        tries += 1;
        assert!(tries < 20, "cluster does not resume");
    }
    for node in &nodes {
        for id in acked.iter().map(String::as_str).chain(["after-restart"]) {
            node.wait_committed(id, T).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_a_stranger_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (addrs, mut nodes) = cluster(dir.path(), "t60", 1).await;
    nodes[0].propose("x", T).await.unwrap();
    let stranger_addr = format!("127.0.0.9:{}", e2e::ports::free_port());
    // Right cluster name, wrong secret: the real arbitrator binary tries.
    let out = tokio::process::Command::new(e2e::binary("garbd"))
        .args([
            "--group",
            "t60",
            "--secret",
            "wrong",
            "--address",
            &addrs[0],
            "--listen",
            &stranger_addr,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("stranger"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wrong shared secret"),
        "clear error expected, got: {stderr}"
    );
    // Wrong cluster name.
    let out = tokio::process::Command::new(e2e::binary("garbd"))
        .args([
            "--group",
            "other",
            "--secret",
            SECRET,
            "--address",
            &addrs[0],
            "--listen",
            &stranger_addr,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("stranger2"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("this is cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing changed: still one voter, still primary, still committing.
    wait_voters(&mut nodes[0], 1).await;
    nodes[0].propose("y", T).await.unwrap();
}

/// Regression: two members joining at the same moment used to leave one of
/// them a learner forever ("already undergoing a configuration change").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_concurrent_joins_all_become_voters() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = addresses(4);
    let mut first = GroupNode::start(
        "t70",
        &addrs[0],
        &dir.path().join("n0"),
        Start::Bootstrap,
        &[],
    )
    .await;
    first.wait_primary(true, T).await;
    let seed = vec![addrs[0].clone()];
    let dirs: Vec<_> = (1..4).map(|i| dir.path().join(format!("n{i}"))).collect();
    let (a, b, c) = tokio::join!(
        GroupNode::start("t70", &addrs[1], &dirs[0], Start::Join(seed.clone()), &[]),
        GroupNode::start("t70", &addrs[2], &dirs[1], Start::Join(seed.clone()), &[]),
        GroupNode::start("t70", &addrs[3], &dirs[2], Start::Join(seed.clone()), &[]),
    );
    wait_voters(&mut first, 4).await;
    for node in [&a, &b, &c] {
        node.wait_primary(true, T).await;
    }
}
