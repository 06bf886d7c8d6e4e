//! Conflicts between nodes and a node failure behind a load balancer, with
//! real MariaDB, real `replicator run` processes and (for the last test) a
//! real HAProxy:
//!
//! - brute-force abort: a local transaction holding a row lock loses to a
//!   remote write-set within a second, and its client gets 1213;
//! - a foreign-key child insert on one node racing the parent's delete on
//!   another never leaves an orphan, and never loses an acknowledged write;
//! - HAProxy health-checking `/health` keeps a client loop working while
//!   one node's replicator is killed, and no acknowledged write is lost.
//!
//! Waiting is polling a condition with a deadline; every timeout fails with
//! the replicators' logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use e2e::haproxy::{ClientLoop, Haproxy};
use e2e::replication_cluster::{FAST_ELECTIONS, REPLICATION_TIMEOUT, ReplicationCluster};

fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

async fn status_number(c: &ReplicationCluster, i: usize, name: &str) -> Option<u64> {
    c.status(i).await?.get(name)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf_abort_a_local_lock_holder_within_a_second() {
    let c = ReplicationCluster::start(3).await;
    let mut setup = c.conn(0).await;
    setup
        .run("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    setup.run("INSERT INTO t VALUES (1, 0), (2, 0)").await;
    c.wait_rows_everywhere("SELECT id, v FROM d.t ORDER BY id", &[(1, 0), (2, 0)])
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    let aborts_before = status_number(&c, 1, "wsrep_local_bf_aborts")
        .await
        .expect("node2's wsrep_local_bf_aborts");

    // Node 2: an open transaction holding row 1's lock on node 2's MariaDB.
    let mut holder = c.conn(1).await;
    holder.run("BEGIN").await;
    holder.run("UPDATE t SET v = 2 WHERE id = 1").await;
    assert_eq!(holder.affected_rows(), 1);
    let locked: Option<i64> = holder
        .query_first(
            "SELECT trx_rows_locked FROM information_schema.INNODB_TRX \
             WHERE trx_mysql_thread_id = CONNECTION_ID()",
        )
        .await
        .unwrap();
    assert!(
        locked.is_some_and(|n| n >= 1),
        "node2's transaction holds its row lock: {locked:?}"
    );

    // Node 1: the same row, committed. Its write-set passes certification
    // (node 2's transaction has not replicated anything) and is applied on
    // node 2, where it waits for the local transaction's lock.
    let mut writer = c.conn(0).await;
    writer
        .exec("UPDATE t SET v = 1 WHERE id = 1")
        .await
        .unwrap_or_else(|e| panic!("node1's commit is acknowledged: {e}\n{}", c.logs()));
    let acknowledged = Instant::now();

    // Node 2's MariaDB shows node 1's value once the applier got the lock,
    // i.e. once the local transaction was rolled back.
    let deadline = acknowledged + REPLICATION_TIMEOUT;
    let applied_after = loop {
        let v: Option<Vec<i64>> = c.query_server(1, "SELECT v FROM d.t WHERE id = 1").await;
        if v.as_deref() == Some(&[1]) {
            break acknowledged.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "node1's write never showed on node2 (last {v:?})\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!(
        "node2's lock holder was aborted and node1's write applied there {applied_after:?} after node1's OK"
    );
    assert!(
        applied_after < Duration::from_secs(1),
        "the local lock holder must lose within 1 s; node1's write showed on node2 after \
         {applied_after:?}\n{}",
        c.logs()
    );

    // The local transaction's client learns it lost at its next statement.
    let next = holder.exec("UPDATE t SET v = 3 WHERE id = 2").await;
    match &next {
        Err(e) if code(e) == Some(1213) => {}
        other => panic!(
            "node2's aborted transaction must get 1213 at its next statement, got {other:?}\n{}",
            c.logs()
        ),
    }
    // The session is closed after the 1213; a new one works and sees node
    // 1's write and none of the aborted transaction.
    holder.reopen(c.opts(1)).await;
    let rows: Vec<(i32, i32)> = holder
        .query("SELECT id, v FROM t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, [(1, 1), (2, 0)]);
    holder.run("UPDATE t SET v = 4 WHERE id = 2").await;

    let aborts_after = status_number(&c, 1, "wsrep_local_bf_aborts")
        .await
        .expect("node2's wsrep_local_bf_aborts");
    assert!(
        aborts_after > aborts_before,
        "node2's wsrep_local_bf_aborts went from {aborts_before} to {aborts_after}"
    );
    c.wait_rows_everywhere("SELECT id, v FROM d.t ORDER BY id", &[(1, 1), (2, 4)])
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["t"]).await;
}

/// How one side of a foreign-key race ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    /// Lost in the cluster: certification failure or brute-force abort.
    Conflict,
    /// Refused by the local server's foreign-key check (the other side's
    /// write-set was already applied here).
    ForeignKey,
}

fn fk_outcome(
    result: &Result<(), mysql_async::Error>,
    fk_code: u16,
    what: &str,
    c: &ReplicationCluster,
) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(e) if matches!(code(e), Some(1213) | Some(1020)) => Outcome::Conflict,
        Err(e) if code(e) == Some(fk_code) => Outcome::ForeignKey,
        Err(e) => panic!("{what}: unexpected error {e}\n{}", c.logs()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fk_child_insert_vs_parent_delete_never_leaves_orphans() {
    const ROUNDS: i32 = 30;
    let c = ReplicationCluster::start(3).await;
    let mut setup = c.conn(0).await;
    setup
        .run(
            "CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL); \
             CREATE TABLE child (id INT PRIMARY KEY, parent_id INT NOT NULL, \
               FOREIGN KEY (parent_id) REFERENCES parent (id))",
        )
        .await;
    c.wait_table_everywhere("parent").await;
    c.wait_table_everywhere("child").await;
    let values: Vec<String> = (1..=ROUNDS).map(|k| format!("({k}, 'p{k}')")).collect();
    setup
        .run(format!("INSERT INTO parent VALUES {}", values.join(", ")))
        .await;
    c.wait_rows_everywhere("SELECT COUNT(*) FROM d.parent", &[i64::from(ROUNDS)])
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;

    let mut inserter = c.conn(0).await;
    let mut deleter = c.conn(1).await;
    // Rounds by (insert outcome, delete outcome).
    let mut tally: BTreeMap<(Outcome, Outcome), u32> = BTreeMap::new();
    let mut parents: BTreeSet<i32> = (1..=ROUNDS).collect();
    let mut children: BTreeSet<i32> = BTreeSet::new();
    for k in 1..=ROUNDS {
        let insert = format!("INSERT INTO child (id, parent_id) VALUES ({k}, {k})");
        let delete = format!("DELETE FROM parent WHERE id = {k}");
        let (ri, rd) = tokio::join!(inserter.exec(&insert), deleter.exec(&delete));
        let oi = fk_outcome(&ri, 1452, &format!("round {k}: {insert} through node1"), &c);
        let od = fk_outcome(&rd, 1451, &format!("round {k}: {delete} through node2"), &c);
        assert!(
            !(oi == Outcome::Ok && od == Outcome::Ok),
            "round {k}: the child insert and the parent delete both committed\n{}",
            c.logs()
        );
        if od == Outcome::Ok {
            assert_eq!(
                deleter.affected_rows(),
                1,
                "round {k}: the delete removed the parent"
            );
            parents.remove(&k);
        }
        if oi == Outcome::Ok {
            children.insert(k);
        }
        *tally.entry((oi, od)).or_default() += 1;
        // A session that lost to a replicated write-set is closed after
        // its 1213.
        if ri.is_err() && inserter.exec("DO 0").await.is_err() {
            inserter.reopen(c.opts(0)).await;
        }
        if rd.is_err() && deleter.exec("DO 0").await.is_err() {
            deleter.reopen(c.opts(1)).await;
        }
    }
    let inserts_won = children.len();
    let deletes_won = ROUNDS as usize - parents.len();
    eprintln!(
        "{ROUNDS} rounds: the insert won {inserts_won}, the delete won {deletes_won}; \
         by (insert, delete) outcome: {tally:?}"
    );
    let conflicts: u32 = tally
        .iter()
        .filter(|((i, d), _)| *i != Outcome::Ok || *d != Outcome::Ok)
        .map(|(_, n)| n)
        .sum();
    assert!(conflicts > 0, "no round had a loser: nothing was exercised");
    // And the race was real: in some round both statements ran before
    // either had replicated, and the cluster decided (1213 for the loser),
    // not the local foreign-key check.
    let decided_by_cluster: u32 = tally
        .iter()
        .filter(|((i, d), _)| *i == Outcome::Conflict || *d == Outcome::Conflict)
        .map(|(_, n)| n)
        .sum();
    assert!(
        decided_by_cluster > 0,
        "every round was decided by a local foreign-key check: the two statements never \
         raced ({tally:?})"
    );

    // Every acknowledged write is there, every node has the same rows, and
    // no child lost its parent.
    let parent_rows: Vec<i32> = parents.iter().copied().collect();
    let child_rows: Vec<i32> = children.iter().copied().collect();
    c.wait_rows_everywhere("SELECT id FROM d.parent ORDER BY id", &parent_rows)
        .await;
    c.wait_rows_everywhere("SELECT id FROM d.child ORDER BY id", &child_rows)
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    for i in 0..c.len() {
        let orphans: Option<Vec<i64>> = c
            .query_server(
                i,
                "SELECT COUNT(*) FROM d.child LEFT JOIN d.parent ON parent.id = child.parent_id \
                 WHERE parent.id IS NULL",
            )
            .await;
        assert_eq!(orphans, Some(vec![0]), "orphaned children on node{}", i + 1);
    }
    c.assert_tables_identical(&["parent", "child"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_schema_change_aborts_a_local_metadata_lock_holder() {
    let c = ReplicationCluster::start(2).await;
    let mut setup = c.conn(0).await;
    setup
        .run("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    setup.run("INSERT INTO t VALUES (1, 0)").await;
    c.wait_rows_everywhere("SELECT id, v FROM d.t ORDER BY id", &[(1, 0)])
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;

    // Node 2: an open transaction that read t holds t's metadata lock
    // until it ends; an ALTER TABLE there must wait for it.
    let mut holder = c.conn(1).await;
    holder.run("BEGIN").await;
    let _: Vec<(i32, i32)> = holder.query("SELECT id, v FROM t").await.unwrap();

    // Node 1: the schema change, acknowledged by node 1's own server.
    c.conn(0)
        .await
        .exec("ALTER TABLE t ADD COLUMN c INT NOT NULL DEFAULT 7")
        .await
        .unwrap_or_else(|e| panic!("ALTER on node1: {e}\n{}", c.logs()));
    let acknowledged = Instant::now();

    // On node 2 it must not wait out a lock timeout (the applier's is
    // 10 s, after which it would fail there only): the holder gives way.
    let deadline = acknowledged + REPLICATION_TIMEOUT;
    let applied_after = loop {
        let columns: Option<Vec<String>> = c
            .query_server(
                1,
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = 'd' AND TABLE_NAME = 't' ORDER BY ORDINAL_POSITION",
            )
            .await;
        if columns.as_deref().is_some_and(|c| c.len() == 3) {
            break acknowledged.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the ALTER never showed on node2 (columns {columns:?})\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "node2's metadata lock holder was aborted; ALTER applied {applied_after:?} after node1's OK"
    );
    assert!(
        applied_after < Duration::from_secs(5),
        "the ALTER waited {applied_after:?} on node2's open transaction"
    );
    // The holder's transaction is gone: its next statement fails.
    let e = holder
        .exec("SELECT 1")
        .await
        .expect_err("the metadata lock holder survived");
    assert!(
        code(&e) == Some(1213) || matches!(e, mysql_async::Error::Io(_)),
        "the holder got {e:?}"
    );
    assert_eq!(
        status_number(&c, 1, "wsrep_toi_failures").await,
        Some(0),
        "the ALTER failed on node2\n{}",
        c.logs()
    );
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["t"]).await;
}

/// Whether a client may see `e` while a node dies behind HAProxy: the
/// connection breaks or cannot be made, or the node is (for a moment)
/// outside the primary component, or a conflict.
fn expected_during_failover(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => matches!(s.code, 1047 | 1213),
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_keeps_a_client_loop_working_while_a_node_dies() {
    const SUCCESSES_AFTER_KILL: usize = 200;
    const MAX_STALL: Duration = Duration::from_secs(10);
    const MAX_ERRORS: usize = 60;
    let mut c = ReplicationCluster::start_with(3, FAST_ELECTIONS).await;
    c.conn(0)
        .await
        .run("CREATE TABLE t (id BIGINT PRIMARY KEY, server INT NOT NULL)")
        .await;
    c.wait_table_everywhere("t").await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;

    let dir = tempfile::tempdir().expect("temporary directory");
    let port = e2e::ports::free_port();
    let haproxy = Haproxy::start(&c, dir.path(), port);
    let front = c.opts(0).ip_or_hostname("127.0.0.1").tcp_port(port);
    Haproxy::wait_routing_to_all(&c, &front, 3, REPLICATION_TIMEOUT).await;
    let client = ClientLoop::start(front, expected_during_failover);

    // Let the loop run, then kill the node it is connected to. (When that
    // node leads the group, the survivors are outside the primary
    // component until they elect a new leader — DESIGN.md's rule: 1047,
    // and `/health` 503 on both, so HAProxy briefly has no server up and
    // closes new connections — which bounds the stall by the election
    // timeout plus HAProxy's `rise`.)
    c.eventually(
        "100 inserts through HAProxy",
        REPLICATION_TIMEOUT,
        async || (client.acknowledged() >= 100).then_some(()),
    )
    .await;
    let victim = client.last_server().expect("the loop's server") as usize - 1;
    let before_kill = client.acknowledged();
    let killed_at = Instant::now();
    c.kill(victim).await;
    eprintln!("killed node{}'s replicator", victim + 1);

    // HAProxy marks it down (its /health no longer answers) ...
    let down = format!("nodes/node{} is DOWN", victim + 1);
    let marked_down = c
        .eventually(
            "HAProxy to mark the killed node down",
            REPLICATION_TIMEOUT,
            async || haproxy.log().contains(&down).then(|| killed_at.elapsed()),
        )
        .await;
    eprintln!(
        "HAProxy marked node{} down {marked_down:?} after the kill",
        victim + 1
    );
    // ... and the loop goes on through the other two.
    let marked_down_at = Instant::now();
    c.eventually(
        &format!("{SUCCESSES_AFTER_KILL} inserts after HAProxy marked the node down"),
        REPLICATION_TIMEOUT,
        async || (client.acknowledged_after(marked_down_at) >= SUCCESSES_AFTER_KILL).then_some(()),
    )
    .await;
    // The loop has stopped: its record is final.
    let r = client.finish().await;
    let after_kill = r.acknowledged.len() - before_kill;
    // The longest time without an acknowledged insert, from the kill on.
    let stall = r.longest_stall(killed_at);
    let errors_window = r
        .errors
        .last()
        .map(|(at, _)| at.saturating_duration_since(killed_at));
    eprintln!(
        "{} inserts acknowledged ({before_kill} before the kill, {after_kill} after); \
         {} errors, the last {errors_window:?} after the kill; longest stall {stall:?}; \
         errors: {:?}",
        r.acknowledged.len(),
        r.errors.len(),
        r.errors
            .iter()
            .map(|(at, e)| format!("+{:?}: {e}", at.saturating_duration_since(killed_at)))
            .collect::<Vec<_>>()
    );
    assert!(
        r.errors.iter().all(|(at, _)| *at >= killed_at),
        "errors before the kill: {:?}",
        r.errors
    );
    assert!(
        r.unexpected().is_empty(),
        "only connection errors, 1047 or 1213 are expected: {:?}",
        r.errors
    );
    assert!(
        r.errors.len() <= MAX_ERRORS,
        "{} errors around one node's death: {:?}",
        r.errors.len(),
        r.errors
    );
    assert!(
        r.errors
            .iter()
            .all(|(at, _)| at.duration_since(killed_at) < MAX_STALL),
        "errors long after the kill: {:?}",
        r.errors
    );
    assert!(
        stall < MAX_STALL,
        "the client loop stalled for {stall:?} after the kill\n{}",
        c.logs()
    );
    assert!(after_kill >= SUCCESSES_AFTER_KILL);

    // No acknowledged insert is lost: every one is on both survivors.
    let survivors: Vec<usize> = (0..c.len()).filter(|&i| i != victim).collect();
    let ids = r.acknowledged_ids();
    c.wait_same_last_committed_on(&survivors, REPLICATION_TIMEOUT)
        .await;
    for &i in &survivors {
        let present: Vec<i64> = c
            .query_server(i, "SELECT id FROM d.t ORDER BY id")
            .await
            .expect("rows on a survivor");
        let present: BTreeSet<i64> = present.into_iter().collect();
        let lost: Vec<&i64> = ids.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "node{} lacks acknowledged inserts {lost:?}\n{}",
            i + 1,
            c.logs()
        );
    }
    drop(haproxy);
}
