//! Replay: a local transaction that passed certification but holds a lock
//! an earlier write-set from another node needs gives way — it is rolled
//! back on its own connection and its write-set committed from the log in
//! its turn, and its client gets OK. And a crash in the middle of that
//! (after the rollback, before the replay commits) loses nothing: the
//! restarted node finds the replay unfinished and finishes it.
//!
//! The interleaving is made exact with failpoints (`REPLICATOR_FAILPOINTS`,
//! see `replicator/src/failpoint.rs`): node A holds other nodes'
//! write-sets before applying them until the test creates a file, so that
//! A's own transaction is ordered after B's write-set but has taken its
//! locks before B's write-set is applied on A.

use e2e::replication_cluster::{Client, REPLICATION_TIMEOUT, ReplicationCluster};
use tokio::task::JoinHandle;

/// The node whose local transaction gives way, and the node whose
/// write-set it gives way to.
const A: usize = 1;
const B: usize = 0;

const ROWS: &str = "SELECT id, v FROM d.t ORDER BY id";

async fn status_number(c: &ReplicationCluster, i: usize, name: &str) -> Option<u64> {
    c.status(i).await?.get(name)?.parse().ok()
}

/// Build the give-way interleaving; returns A's pending COMMIT (with its
/// connection) once everything is in place and the held write-set has
/// been released.
async fn give_way(
    c: &mut ReplicationCluster,
    release: &std::path::Path,
    more_failpoints: &str,
) -> JoinHandle<(Client, Result<(), mysql_async::Error>)> {
    let mut setup = c.conn(A).await;
    setup
        .run("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    setup
        .run("INSERT INTO t VALUES (1, 0), (2, 0), (3, 0), (10, 0)")
        .await;
    c.wait_rows_everywhere(ROWS, &[(1, 0), (2, 0), (3, 0), (10, 0)])
        .await;

    // A holds write-sets from other nodes before applying them.
    let failpoints = format!(
        "before-remote-apply=wait-for-file:{}{more_failpoints}",
        release.display()
    );
    c.kill(A).await;
    c.set_env(A, &[("REPLICATOR_FAILPOINTS", &failpoints)]);
    c.restart(A).await;
    c.wait_cluster_size(3, REPLICATION_TIMEOUT).await;

    // B's write-set: a row in the gap A is about to lock. A receives it
    // and holds it.
    let received = status_number(c, A, "wsrep_received").await.unwrap();
    c.conn(B).await.run("INSERT INTO t VALUES (5, 0)").await;
    c.eventually(
        "A to receive B's write-set",
        REPLICATION_TIMEOUT,
        async || (status_number(c, A, "wsrep_received").await? > received).then_some(()),
    )
    .await;

    // A's transaction locks rows 1..10 and the gaps between them (not
    // seeing row 5), then commits: its keys do not meet B's, so it
    // passes certification, ordered after B's write-set, and waits for
    // its turn holding the gap lock B's insert needs.
    let replicated = status_number(c, A, "wsrep_replicated").await.unwrap();
    let mut a = c.conn(A).await;
    a.run("BEGIN").await;
    a.run("UPDATE t SET v = v + 1 WHERE id BETWEEN 1 AND 10")
        .await;
    let commit = tokio::spawn(async move {
        let result = a.exec("COMMIT").await;
        (a, result)
    });
    c.eventually(
        "A's transaction to be ordered after B's write-set",
        REPLICATION_TIMEOUT,
        async || (status_number(c, A, "wsrep_replicated").await? > replicated).then_some(()),
    )
    .await;
    std::fs::write(release, b"").expect("release file");
    commit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certified_transaction_gives_way_and_is_replayed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut c = ReplicationCluster::start(3).await;
    let replays = status_number(&c, A, "wsrep_local_replays").await.unwrap();
    let commit = give_way(&mut c, &dir.path().join("release"), "").await;
    let (_a, result) = tokio::time::timeout(REPLICATION_TIMEOUT, commit)
        .await
        .expect("A's COMMIT returns")
        .expect("commit task");
    result.unwrap_or_else(|e| {
        panic!(
            "A's COMMIT is acknowledged after its replay: {e}\n{}",
            c.logs()
        )
    });
    assert_eq!(
        status_number(&c, A, "wsrep_local_replays").await,
        Some(replays + 1),
        "A's transaction was replayed (not committed in place)\n{}",
        c.logs()
    );
    c.wait_rows_everywhere(ROWS, &[(1, 1), (2, 1), (3, 1), (5, 0), (10, 1)])
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["t"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_giving_way_and_the_replay_loses_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut c = ReplicationCluster::start(3).await;
    let commit = give_way(
        &mut c,
        &dir.path().join("release"),
        ",replay-after-rollback=abort",
    )
    .await;
    // A's replicator dies right after rolling its transaction back to
    // give way: its client loses the connection (outcome unknown to it),
    // but the cluster ordered and certified the write-set, so it commits
    // on every node.
    let (_a, result) = tokio::time::timeout(REPLICATION_TIMEOUT, commit)
        .await
        .expect("A's COMMIT returns")
        .expect("commit task");
    assert!(
        result.is_err(),
        "A's replicator was to abort before answering the COMMIT"
    );
    c.kill(A).await;
    c.set_env(A, &[]);
    c.restart(A).await;
    c.wait_rows_everywhere(ROWS, &[(1, 1), (2, 1), (3, 1), (5, 0), (10, 1)])
        .await;
    assert_eq!(
        status_number(&c, A, "wsrep_local_replays").await,
        Some(1),
        "the restarted node finished the interrupted replay\n{}",
        c.logs()
    );
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["t"]).await;
    // Nothing is left to replay.
    let pending: Option<Vec<String>> = c
        .query_server(A, "SELECT xid FROM replicator.replaying")
        .await;
    assert_eq!(pending, Some(vec![]));
}
