//! A node's graceful stop and restart, with real MariaDB and real
//! `replicator run` processes (and, for the rolling restart, a real
//! HAProxy):
//!
//! - SIGTERM takes the node out of `/health` and refuses new clients; a
//!   transaction open at that moment may still commit; idle sessions end;
//!   the node leaves the voters, so the one node left of a two-node cluster
//!   stays primary; restarted, the node joins again and catches up;
//! - a transaction still open when the grace period ends is rolled back,
//!   on every node, and leaves nothing prepared;
//! - a rolling restart of all three nodes under a client loop through
//!   HAProxy loses no acknowledged write, and the client sees only errors
//!   that say the statement did not run (or a broken connection).
//!
//! Waiting is polling a condition with a deadline; every timeout fails with
//! the replicators' logs.

use std::time::{Duration, Instant};

use e2e::haproxy::{ClientLoop, Haproxy};
use e2e::replication_cluster::{
    FAST_ELECTIONS, REPLICATION_TIMEOUT, ReplicationCluster, SETUP_TIMEOUT,
};

fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// An error that says the statement did not run on a stopping node: 1053
/// (server shutdown), or the connection closed under it.
fn stopped_under_it(e: &mysql_async::Error) -> bool {
    code(e) == Some(1053) || matches!(e, mysql_async::Error::Io(_) | mysql_async::Error::Driver(_))
}

/// Two nodes with `--stop-grace-ms grace`, and table `t (id, v)` on both.
async fn two_nodes_with_a_table(grace: &str) -> ReplicationCluster {
    let mut flags = FAST_ELECTIONS.to_vec();
    flags.extend(["--stop-grace-ms", grace]);
    let c = ReplicationCluster::start_with(2, &flags).await;
    c.conn(0)
        .await
        .run("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    c.wait_table_everywhere("t").await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c
}

async fn wait_primary_alone(c: &ReplicationCluster, i: usize) {
    c.eventually(
        &format!("node{} to be primary on its own", i + 1),
        REPLICATION_TIMEOUT,
        async || {
            let s = c.status(i).await?;
            (s.get("wsrep_cluster_size").map(String::as_str) == Some("1")
                && s.get("wsrep_cluster_status").map(String::as_str) == Some("Primary"))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_drains_leaves_and_the_node_comes_back() {
    // A grace period long enough that the open transaction below never
    // races it.
    let mut c = two_nodes_with_a_table("60000").await;

    // On node2: a session inside a transaction, and an idle one.
    let mut open = c.conn(1).await;
    open.run("BEGIN").await;
    open.run("INSERT INTO t VALUES (1, 1)").await;
    let mut idle = c.conn(1).await;
    idle.run("SELECT 1").await;
    let node2_opts = c.opts(1);
    let node2_http = c.http_address(1);

    let stopper = async {
        let took = c.stop_gracefully(1).await;
        (took, c.log(1))
    };
    let client = async {
        // The node leaves the load balancers' rotation at once ...
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        loop {
            let answer = e2e::http::http_get(&node2_http, "/health").await;
            if answer
                .as_ref()
                .is_ok_and(|(code, _, body)| *code == 503 && body.contains("Leaving"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node2's /health never answered 503 Leaving: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ... soon takes no new client ...
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        while let Ok(conn) = mysql_async::Conn::new(node2_opts.clone()).await {
            let _ = conn.disconnect().await;
            assert!(
                Instant::now() < deadline,
                "a stopping node still accepts new clients"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ... ends the idle session without running its statement ...
        let e = idle
            .exec("INSERT INTO t VALUES (3, 3)")
            .await
            .expect_err("an idle session outlived the stop");
        assert!(stopped_under_it(&e), "idle session got {e:?}");
        // ... and lets the open transaction finish.
        open.run("INSERT INTO t VALUES (2, 2)").await;
        open.run("COMMIT").await;
        // Its session then ends too: the node is stopping.
        let after = open.exec("SELECT 1").await;
        assert!(
            after.as_ref().is_err_and(stopped_under_it),
            "a session outside a transaction outlived the stop: {after:?}"
        );
    };
    let ((took, log), ()) = tokio::join!(stopper, client);
    assert!(
        took < Duration::from_secs(30),
        "the stop waited {took:?}: it did not notice the last session end"
    );
    assert!(
        log.contains("left the voters"),
        "node2 did not leave the voters:\n{log}"
    );

    // The node left: node1 alone is the primary component and takes writes.
    wait_primary_alone(&c, 0).await;
    c.conn(0).await.run("INSERT INTO t VALUES (4, 4)").await;
    c.wait_rows_on(
        &[0],
        "SELECT id, v FROM d.t ORDER BY id",
        &[(1, 1), (2, 2), (4, 4)],
    )
    .await;
    // Nothing the stop cut off is left prepared on node2's server.
    let prepared: Vec<(i64, i64, i64, String)> = c
        .query_server(1, "XA RECOVER")
        .await
        .expect("XA RECOVER on node2's server");
    assert!(prepared.is_empty(), "left prepared: {prepared:?}");

    // Restarted with the same arguments, it joins again and catches up.
    c.restart(1).await;
    c.wait_cluster_size(2, SETUP_TIMEOUT).await;
    c.wait_synced(SETUP_TIMEOUT).await;
    assert!(
        c.log(1).contains("joining it again"),
        "node2 did not rejoin as a node that had left:\n{}",
        c.log(1)
    );
    c.conn(1).await.run("INSERT INTO t VALUES (5, 5)").await;
    c.wait_rows_everywhere(
        "SELECT id, v FROM d.t ORDER BY id",
        &[(1, 1), (2, 2), (4, 4), (5, 5)],
    )
    .await;
    c.assert_tables_identical(&["t"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_past_the_grace_period_rolls_back_everywhere() {
    let mut c = two_nodes_with_a_table("300").await;
    let mut open = c.conn(1).await;
    open.run("BEGIN").await;
    open.run("INSERT INTO t VALUES (1, 1)").await;

    c.stop_gracefully(1).await;
    let log = c.log(1);
    assert!(
        log.contains("grace period over"),
        "the stop did not cut the open session:\n{log}"
    );
    let e = open
        .exec("COMMIT")
        .await
        .expect_err("a transaction outlived its node's stop");
    assert!(stopped_under_it(&e), "got {e:?}");

    // Rolled back: on node2's own server, and never on node1.
    wait_primary_alone(&c, 0).await;
    let on_node2: Vec<i64> = c
        .query_server(1, "SELECT id FROM d.t")
        .await
        .expect("node2's server");
    assert!(on_node2.is_empty(), "node2 kept {on_node2:?}");
    let prepared: Vec<(i64, i64, i64, String)> = c
        .query_server(1, "XA RECOVER")
        .await
        .expect("XA RECOVER on node2's server");
    assert!(prepared.is_empty(), "left prepared: {prepared:?}");
    c.conn(0).await.run("INSERT INTO t VALUES (2, 2)").await;
    c.wait_rows_on(&[0], "SELECT id, v FROM d.t ORDER BY id", &[(2, 2)])
        .await;

    c.restart(1).await;
    c.wait_cluster_size(2, SETUP_TIMEOUT).await;
    c.wait_rows_everywhere("SELECT id, v FROM d.t ORDER BY id", &[(2, 2)])
        .await;
}

/// What a client may see while the node it is connected to restarts:
/// the statement did not run (1053), the connection broke, or — for a
/// moment while leadership moves — the node is outside the primary
/// component (1047).
fn expected_during_restart(e: &mysql_async::Error) -> bool {
    stopped_under_it(e) || code(e) == Some(1047)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_behind_haproxy_loses_no_write() {
    let mut c = ReplicationCluster::start_with(3, FAST_ELECTIONS).await;
    rolling_restart(&mut c, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_two_nodes_and_an_arbitrator_loses_no_write() {
    let mut c = ReplicationCluster::start_with(2, FAST_ELECTIONS).await;
    c.start_arbitrator(FAST_ELECTIONS).await;
    rolling_restart(&mut c, 3).await;
}

/// Restart every data node of `c` in turn, gracefully, under a client loop
/// through HAProxy; `voters` is the cluster size when all are up. Checks
/// the loop's errors, its longest stall, and that no acknowledged insert
/// is lost.
async fn rolling_restart(c: &mut ReplicationCluster, voters: usize) {
    const MAX_STALL: Duration = Duration::from_secs(10);
    c.conn(0)
        .await
        .run("CREATE TABLE t (id BIGINT PRIMARY KEY, server INT NOT NULL)")
        .await;
    c.wait_table_everywhere("t").await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;

    let dir = tempfile::tempdir().expect("temporary directory");
    let port = e2e::ports::free_port();
    let haproxy = Haproxy::start(c, dir.path(), port);
    let front = c.opts(0).ip_or_hostname("127.0.0.1").tcp_port(port);
    Haproxy::wait_routing_to_all(c, &front, c.len(), REPLICATION_TIMEOUT).await;
    let client = ClientLoop::start(front.clone(), expected_during_restart);
    c.eventually(
        "50 inserts through HAProxy",
        REPLICATION_TIMEOUT,
        async || (client.acknowledged() >= 50).then_some(()),
    )
    .await;

    let started = Instant::now();
    let mut stops = Vec::new();
    for i in 0..c.len() {
        let took = c.stop_gracefully(i).await;
        c.restart(i).await;
        c.wait_cluster_size(voters, SETUP_TIMEOUT).await;
        c.wait_synced(SETUP_TIMEOUT).await;
        // Back in HAProxy's rotation before the next node goes.
        Haproxy::wait_routing_to_all(c, &front, c.len(), REPLICATION_TIMEOUT).await;
        let before = client.acknowledged();
        c.eventually(
            &format!("inserts after node{} came back", i + 1),
            REPLICATION_TIMEOUT,
            async || (client.acknowledged() >= before + 20).then_some(()),
        )
        .await;
        stops.push(took);
    }
    let r = client.finish().await;
    let stall = r.longest_stall(started);
    eprintln!(
        "rolling restart: {} inserts acknowledged, {} errors, longest stall {} ms, \
         stops took {stops:?}; errors: {:?}",
        r.acknowledged.len(),
        r.errors.len(),
        stall.as_millis(),
        r.errors
            .iter()
            .map(|(at, e)| format!("+{:?}: {e}", at.saturating_duration_since(started)))
            .collect::<Vec<_>>()
    );
    assert!(
        r.unexpected().is_empty(),
        "only 1053, 1047 or a broken connection are expected: {:?}\n{}",
        r.unexpected(),
        haproxy.log()
    );
    assert!(
        r.errors.len() <= 10 * c.len(),
        "{} errors over {} restarts: {:?}",
        r.errors.len(),
        c.len(),
        r.errors
    );
    assert!(
        stall < MAX_STALL,
        "the client loop stalled for {stall:?}\n{}",
        c.logs()
    );

    // No acknowledged insert is lost, and the nodes agree.
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    let ids = r.acknowledged_ids();
    for i in 0..c.len() {
        let present: Vec<i64> = c
            .query_server(i, "SELECT id FROM d.t ORDER BY id")
            .await
            .expect("rows");
        let present: std::collections::BTreeSet<i64> = present.into_iter().collect();
        let lost: Vec<&i64> = ids.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "node{} lacks acknowledged inserts {lost:?}\n{}",
            i + 1,
            c.logs()
        );
    }
    c.assert_tables_identical(&["t"]).await;
    drop(haproxy);
}
