//! Several nodes, each a real MariaDB with the real `replicator run` in
//! front of it (see `e2e::replication_cluster`): writes through any node
//! are read on every node, DDL runs in total order everywhere, concurrent
//! conflicting commits on different nodes never both win, a mixed workload
//! with schema changes converges to identical tables, foreign-key cascades
//! replicate, and a replica that was killed catches up when it restarts.
//!
//! Replication is awaited by polling a condition with a deadline (a row
//! visible on a node, every node at the same last committed seqno); a
//! timeout fails with the replicators' logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use e2e::replication_cluster::{Client, REPLICATION_TIMEOUT, ReplicationCluster};
use rand::{Rng, SeedableRng};

fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Certification failure or BF abort (1213), or a snapshot-isolation
/// write conflict found by the local server (1020): the transaction was
/// rolled back and may be retried.
fn is_conflict(e: &mysql_async::Error) -> bool {
    matches!(code(e), Some(1213) | Some(1020))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_forms_with_every_node_serving_clients() {
    let started = Instant::now();
    let c = ReplicationCluster::start(3).await;
    eprintln!("3 nodes up in {:?}", started.elapsed());
    let mut indexes = BTreeSet::new();
    let mut group_addresses = BTreeSet::new();
    for i in 0..c.len() {
        let host = format!("127.0.0.{}", i + 1);
        assert_eq!(c.sidecar(i).host, host);
        group_addresses.insert(c.sidecar(i).group_address());
        let mut conn = c.conn(i).await;
        // The client reached node i's own MariaDB, as the test account.
        let (server_id, db, user): (u32, String, String) = conn
            .query_first("SELECT @@server_id, DATABASE(), CURRENT_USER()")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            server_id,
            i as u32 + 1,
            "node{} reached its own server",
            i + 1
        );
        assert_eq!(db, "d");
        assert_eq!(user, "app@%");
        // Reads work through every node.
        conn.exec(
            "START TRANSACTION READ ONLY; SELECT COUNT(*) FROM information_schema.tables; COMMIT",
        )
        .await
        .unwrap();
        // Every node sees the whole cluster, primary and ready.
        let s = c.status(i).await.unwrap();
        assert_eq!(s["wsrep_cluster_size"], "3", "node{}: {s:?}", i + 1);
        assert_eq!(s["wsrep_cluster_status"], "Primary", "node{}: {s:?}", i + 1);
        assert_eq!(s["wsrep_ready"], "ON", "node{}: {s:?}", i + 1);
        assert_eq!(s["wsrep_connected"], "ON", "node{}: {s:?}", i + 1);
        indexes.insert(s["wsrep_local_index"].clone());
    }
    assert_eq!(indexes.len(), 3, "each node has its own index: {indexes:?}");
    assert_eq!(group_addresses.len(), 3);
}

/// `SELECT id, v, n FROM d.t ORDER BY id` of the expected state.
fn rows_of(expected: &BTreeMap<i32, (String, i32)>) -> Vec<(i32, String, i32)> {
    expected
        .iter()
        .map(|(id, (v, n))| (*id, v.clone(), *n))
        .collect()
}

const T_ROWS: &str = "SELECT id, v, n FROM d.t ORDER BY id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_any_node_are_read_on_all() {
    let c = ReplicationCluster::start(3).await;
    let n = c.len();
    let mut conns = Vec::new();
    for i in 0..n {
        conns.push(c.conn(i).await);
    }
    // DDL through node 1 runs in total order: the table exists everywhere.
    conns[0]
        .run("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40) NOT NULL, n INT NOT NULL)")
        .await;
    c.wait_table_everywhere("t").await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;

    let mut expected: BTreeMap<i32, (String, i32)> = BTreeMap::new();
    let base = |node: usize| (node as i32 + 1) * 100;

    // Inserts through every node: five autocommit statements, then a
    // five-row transaction.
    for (i, conn) in conns.iter_mut().enumerate() {
        for k in 0..10 {
            if k == 5 {
                conn.run("BEGIN").await;
            }
            let (id, v) = (base(i) + k, format!("node{}-{k}", i + 1));
            conn.run(format!("INSERT INTO t VALUES ({id}, '{v}', {k})"))
                .await;
            expected.insert(id, (v, k));
        }
        conn.run("COMMIT").await;
    }
    c.wait_rows_everywhere(T_ROWS, &rows_of(&expected)).await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;

    // Every node updates the rows another node inserted.
    for (i, conn) in conns.iter_mut().enumerate() {
        let of = base((i + 1) % n);
        conn.run(format!(
            "UPDATE t SET n = n + 1000, v = CONCAT(v, '/u{}') WHERE id BETWEEN {of} AND {}",
            i + 1,
            of + 9
        ))
        .await;
        assert_eq!(
            conn.affected_rows(),
            10,
            "node{} saw the rows it updated",
            i + 1
        );
        for id in of..of + 10 {
            let row = expected.get_mut(&id).unwrap();
            row.0.push_str(&format!("/u{}", i + 1));
            row.1 += 1000;
        }
    }
    c.wait_rows_everywhere(T_ROWS, &rows_of(&expected)).await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;

    // Every node deletes, updates and inserts in one transaction, on rows
    // a third node inserted.
    for (i, conn) in conns.iter_mut().enumerate() {
        let of = base((i + 2) % n);
        let new_id = 1000 + i as i32;
        conn.run("BEGIN").await;
        conn.run(format!(
            "DELETE FROM t WHERE id BETWEEN {of} AND {} AND n % 2 = 0",
            of + 9
        ))
        .await;
        assert_eq!(
            conn.affected_rows(),
            5,
            "node{} saw the rows it deleted",
            i + 1
        );
        conn.run(format!("UPDATE t SET n = -n WHERE id = {}", of + 1))
            .await;
        conn.run(format!(
            "INSERT INTO t VALUES ({new_id}, 'tx{}', {i})",
            i + 1
        ))
        .await;
        conn.run("COMMIT").await;
        expected.retain(|id, (_, nv)| !((of..of + 10).contains(id) && *nv % 2 == 0));
        expected.get_mut(&(of + 1)).unwrap().1 *= -1;
        expected.insert(new_id, (format!("tx{}", i + 1), i as i32));
    }
    assert_eq!(expected.len(), n * (10 - 5 + 1));
    c.wait_rows_everywhere(T_ROWS, &rows_of(&expected)).await;

    // Every node reads the same rows through its replicator too.
    for (i, conn) in conns.iter_mut().enumerate() {
        let rows: Vec<(i32, String, i32)> = conn
            .query("SELECT id, v, n FROM t ORDER BY id")
            .await
            .unwrap();
        assert_eq!(rows, rows_of(&expected), "read through node{}", i + 1);
    }
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["t"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_row_on_two_nodes_one_wins() {
    const ROUNDS: i64 = 20;
    let c = ReplicationCluster::start(3).await;
    let mut setup = c.conn(0).await;
    setup
        .run("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    c.wait_table_everywhere("t").await;
    setup.run("INSERT INTO t VALUES (1, 0)").await;
    // Successful commits through node 1 and node 2.
    let mut wins = [0i64; 2];
    for round in 0..ROUNDS {
        let committed = wins[0] + wins[1];
        // Both nodes have applied every earlier round: both snapshots are
        // current, so the first of the two in the log must pass.
        c.wait_rows_everywhere("SELECT v FROM d.t WHERE id = 1", &[committed])
            .await;
        c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
        // The loser of a round may have been aborted for the winner's
        // write-set (brute-force abort closes its connection after 1213).
        let mut a = c.conn(0).await;
        let mut b = c.conn(1).await;
        a.run("BEGIN").await;
        b.run("BEGIN").await;
        let va: Option<i64> = a.query_first("SELECT v FROM t WHERE id = 1").await.unwrap();
        let vb: Option<i64> = b.query_first("SELECT v FROM t WHERE id = 1").await.unwrap();
        assert_eq!(
            (va, vb),
            (Some(committed), Some(committed)),
            "round {round}"
        );
        a.run("UPDATE t SET v = v + 1 WHERE id = 1").await;
        b.run("UPDATE t SET v = v + 1 WHERE id = 1").await;
        let (ra, rb) = tokio::join!(a.exec("COMMIT"), b.exec("COMMIT"));
        match (&ra, &rb) {
            (Ok(()), Err(e)) if is_conflict(e) => wins[0] += 1,
            (Err(e), Ok(())) if is_conflict(e) => wins[1] += 1,
            _ => panic!(
                "round {round}: exactly one commit must succeed and the other fail with 1213 \
                 or 1020; node1: {ra:?}, node2: {rb:?}\n{}",
                c.logs()
            ),
        }
    }
    eprintln!("wins by node: {wins:?}");
    // No lost update: the value counts every successful commit, everywhere.
    assert_eq!(wins[0] + wins[1], ROUNDS);
    c.wait_rows_everywhere("SELECT v FROM d.t WHERE id = 1", &[wins[0] + wins[1]])
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["t"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_of_equal_unique_keys_under_ci_collation_never_both_commit() {
    const ROUNDS: usize = 15;
    let c = ReplicationCluster::start(3).await;
    let mut setup = c.conn(0).await;
    setup
        .run(
            "CREATE TABLE u (id INT PRIMARY KEY, \
             name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL, \
             UNIQUE KEY (name))",
        )
        .await;
    c.wait_table_everywhere("u").await;
    // Values that differ in bytes and are equal under the column's
    // collation: case, a trailing space (PAD SPACE), an accent.
    let pair = |r: usize| match r % 3 {
        0 => (format!("abc{r}"), format!("ABC{r}")),
        1 => (format!("abc{r}"), format!("Abc{r} ")),
        _ => (format!("cafe{r}"), format!("CAFÉ{r}")),
    };
    let mut a = c.conn(0).await;
    let mut b = c.conn(1).await;
    for r in 0..3 {
        let (x, y) = pair(r);
        let equal: Option<bool> = a
            .query_first(format!(
                "SELECT '{x}' = '{y}' COLLATE utf8mb4_general_ci AND BINARY '{x}' <> BINARY '{y}'"
            ))
            .await
            .unwrap();
        assert_eq!(equal, Some(true), "test premise: {x:?} and {y:?}");
    }
    let mut wins = [0; 2];
    for r in 0..ROUNDS {
        c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
        let (x, y) = pair(r);
        a.run("BEGIN").await;
        b.run("BEGIN").await;
        a.run(format!("INSERT INTO u VALUES ({}, '{x}')", 2 * r))
            .await;
        b.run(format!("INSERT INTO u VALUES ({}, '{y}')", 2 * r + 1))
            .await;
        let (ra, rb) = tokio::join!(a.exec("COMMIT"), b.exec("COMMIT"));
        let refused = |e: &mysql_async::Error| is_conflict(e) || code(e) == Some(1062);
        match (&ra, &rb) {
            (Ok(()), Err(e)) if refused(e) => wins[0] += 1,
            (Err(e), Ok(())) if refused(e) => wins[1] += 1,
            _ => panic!(
                "round {r}: {x:?} through node1 and {y:?} through node2 — exactly one must \
                 commit, the other be refused (1213, 1020 or 1062); node1: {ra:?}, node2: \
                 {rb:?}\n{}",
                c.logs()
            ),
        }
    }
    eprintln!("wins by node: {wins:?}");
    // Every node converges: one row per round, the same everywhere (once
    // the last round's winner has been applied on every node).
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    let ids: Vec<i64> = {
        let mut rows: Vec<(i64, String)> =
            a.query("SELECT id, name FROM u ORDER BY id").await.unwrap();
        assert_eq!(
            rows.len(),
            ROUNDS,
            "one row per round through node1: {rows:?}"
        );
        rows.sort();
        rows.into_iter().map(|r| r.0).collect()
    };
    c.wait_rows_everywhere("SELECT id FROM d.u ORDER BY id", &ids)
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["u"]).await;
    // And every node keeps running: a write through each is read on all.
    for i in 0..c.len() {
        let mut conn = c.conn(i).await;
        conn.run(format!("INSERT INTO u VALUES ({}, 'after{i}')", 1000 + i))
            .await;
    }
    let mut all = ids.clone();
    all.extend([1000, 1001, 1002]);
    c.wait_rows_everywhere("SELECT id FROM d.u ORDER BY id", &all)
        .await;
}

/// What one workload client did.
#[derive(Debug, Default)]
struct WorkerStats {
    commits: u64,
    retries: u64,
}

/// One workload client: `txns` random transactions of inserts, updates and
/// deletes on t1..t3, each retried until it commits when it loses a
/// conflict. Reports progress after each commit.
async fn worker(
    mut conn: Client,
    opts: mysql_async::OptsBuilder,
    seed: u64,
    txns: usize,
    progress: tokio::sync::watch::Sender<usize>,
) -> Result<WorkerStats, String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut stats = WorkerStats::default();
    for _ in 0..txns {
        let statements: Vec<String> = (0..rng.random_range(1..=3))
            .map(|_| {
                let table = rng.random_range(1..=3);
                let id = rng.random_range(0..60);
                let a = rng.random_range(0..1000);
                match rng.random_range(0..4) {
                    0 | 1 => match table {
                        2 => format!(
                            "INSERT INTO t2 (id, a, u) VALUES ({id}, {a}, {}) \
                             ON DUPLICATE KEY UPDATE a = a + 1",
                            if a % 2 == 0 {
                                "NULL".to_string()
                            } else {
                                format!("'u{}'", a % 40)
                            }
                        ),
                        _ => format!(
                            "INSERT INTO t{table} (id, a, b) VALUES ({id}, {a}, 's{seed}') \
                             ON DUPLICATE KEY UPDATE a = a + 1"
                        ),
                    },
                    2 => format!(
                        "UPDATE t{table} SET a = a + 1 WHERE id BETWEEN {id} AND {}",
                        id + 3
                    ),
                    _ => format!("DELETE FROM t{table} WHERE id = {id}"),
                }
            })
            .collect();
        let explicit = statements.len() > 1 || rng.random_bool(0.3);
        let first_try = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let result = async {
                if explicit {
                    conn.exec("BEGIN").await?;
                }
                for s in &statements {
                    conn.exec(s).await?;
                }
                if explicit {
                    conn.exec("COMMIT").await?;
                }
                Ok::<_, mysql_async::Error>(())
            }
            .await;
            match result {
                Ok(()) => break,
                // A client's retry loop: a fresh transaction (a fresh
                // snapshot) after a short backoff, for as long as
                // replication may lag.
                Err(e) if is_conflict(&e) && first_try.elapsed() < REPLICATION_TIMEOUT => {
                    stats.retries += 1;
                    // Ends whatever the error left open (nothing after a
                    // failed COMMIT); a session aborted for a replicated
                    // write-set lost its connection with the 1213.
                    if conn.exec("ROLLBACK").await.is_err() {
                        conn.reopen(opts.clone()).await;
                    }
                    let backoff = Duration::from_millis(5 * u64::from(attempts.min(20)));
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(format!("{statements:?} (attempt {attempts}): {e}")),
            }
        }
        stats.commits += 1;
        progress.send_modify(|p| *p += 1);
    }
    Ok(stats)
}

// Writers on every node and schema changes through each node in turn: every
// transaction eventually commits (conflicts are retried), and the nodes end
// identical. Under load this is where appliers meet local transactions at
// every stage (open, preparing, prepared, ordered), so brute-force aborts
// and replays all happen here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_with_ddl_converges() {
    const PER_NODE: usize = 2;
    const TXNS: usize = 60;
    let c = ReplicationCluster::start(3).await;
    let n = c.len();
    let mut setup = c.conn(0).await;
    setup
        .run(
            "CREATE TABLE t1 (id INT PRIMARY KEY, a INT NOT NULL, b VARCHAR(32) NOT NULL); \
             CREATE TABLE t2 (id INT PRIMARY KEY, a INT NOT NULL, u VARCHAR(32) NULL, UNIQUE KEY (u)); \
             CREATE TABLE t3 (id INT PRIMARY KEY, a INT NOT NULL, b VARCHAR(32) NOT NULL, KEY (a))",
        )
        .await;
    for t in ["t1", "t2", "t3"] {
        c.wait_table_everywhere(t).await;
    }
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    let started = Instant::now();
    let (progress, progress_rx) = tokio::sync::watch::channel(0usize);
    let mut workers = Vec::new();
    for w in 0..n * PER_NODE {
        let conn = c.conn(w % n).await;
        let opts = c.opts(w % n);
        workers.push(tokio::spawn(worker(
            conn,
            opts,
            w as u64,
            TXNS,
            progress.clone(),
        )));
    }
    drop(progress);

    // One DDL client issues each schema change through the next node in
    // turn, spread over the workload (a table it creates is filled through
    // the node that created it, and dropped through another).
    let ddl: [&[&str]; 10] = [
        &["ALTER TABLE t1 ADD COLUMN c1 INT NOT NULL DEFAULT 1"],
        &["CREATE INDEX t2_a ON t2 (a)"],
        &[
            "CREATE TABLE x1 (id INT PRIMARY KEY, v INT)",
            "INSERT INTO x1 VALUES (1, 1), (2, 2)",
        ],
        &["ALTER TABLE t3 ADD COLUMN c2 VARCHAR(10) DEFAULT 'x'"],
        &["DROP TABLE x1"],
        &["ALTER TABLE t2 ADD COLUMN c3 INT NULL"],
        &["CREATE INDEX t1_ab ON t1 (a, b)"],
        &["CREATE TABLE x2 (id INT PRIMARY KEY)"],
        &["DROP TABLE x2"],
        &["DROP INDEX t2_a ON t2"],
    ];
    let total = n * PER_NODE * TXNS;
    let mut ddl_conns = Vec::new();
    for i in 0..n {
        ddl_conns.push(c.conn(i).await);
    }
    let mut rx = progress_rx.clone();
    for (k, statements) in ddl.iter().enumerate() {
        let at = (k + 1) * total / (ddl.len() + 2);
        // Workers that all fail end the channel; their errors are reported below.
        let _ = rx.wait_for(|&p| p >= at).await;
        let node = k % n;
        for statement in *statements {
            let first_try = Instant::now();
            loop {
                match ddl_conns[node].exec(*statement).await {
                    Ok(()) => break,
                    Err(e) if is_conflict(&e) && first_try.elapsed() < REPLICATION_TIMEOUT => {
                        continue;
                    }
                    Err(e) => panic!("`{statement}` through node{}: {e}\n{}", node + 1, c.logs()),
                }
            }
        }
    }
    let mut stats = Vec::new();
    for (w, handle) in workers.into_iter().enumerate() {
        match handle.await.expect("worker task") {
            Ok(s) => stats.push(s),
            Err(e) => panic!("worker {w} (node{}): {e}\n{}", w % n + 1, c.logs()),
        }
    }
    let commits: u64 = stats.iter().map(|s| s.commits).sum();
    let retries: u64 = stats.iter().map(|s| s.retries).sum();
    eprintln!(
        "{commits} transactions committed ({retries} retries after conflicts) and {} DDL \
         statements in {:?}",
        ddl.len(),
        started.elapsed()
    );
    assert_eq!(commits as usize, total);

    // Quiescent: every node reaches the same position, and then holds the
    // same tables.
    let seqno = c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    eprintln!("converged at seqno {seqno}");
    c.assert_tables_identical(&["t1", "t2", "t3"]).await;
    for i in 0..n {
        let left: Option<Vec<String>> = c
            .query_server(
                i,
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = 'd' ORDER BY table_name",
            )
            .await;
        assert_eq!(
            left,
            Some(vec!["t1".to_string(), "t2".into(), "t3".into()]),
            "node{}: the dropped tables are gone",
            i + 1
        );
    }
    // The schema changes are there (identical everywhere, checked above).
    let t1 = c.create_table(0, "t1").await.unwrap();
    assert!(t1.contains("`c1`") && t1.contains("`t1_ab`"), "{t1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fk_cascade_replicates() {
    let c = ReplicationCluster::start(3).await;
    let mut conns = Vec::new();
    for i in 0..c.len() {
        conns.push(c.conn(i).await);
    }
    conns[0]
        .run(
            "CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL); \
             CREATE TABLE child (id INT PRIMARY KEY, parent_id INT NOT NULL, \
               FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE); \
             CREATE TABLE grandchild (id INT PRIMARY KEY, child_id INT NOT NULL, \
               FOREIGN KEY (child_id) REFERENCES child (id) ON DELETE CASCADE)",
        )
        .await;
    for t in ["parent", "child", "grandchild"] {
        c.wait_table_everywhere(t).await;
    }
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    // Parents through node 1, children through node 2, grandchildren
    // through node 3, each once the rows they refer to are there.
    conns[0]
        .run("INSERT INTO parent VALUES (1, 'one'), (2, 'two'), (3, 'three')")
        .await;
    c.wait_rows_everywhere("SELECT id FROM d.parent ORDER BY id", &[1, 2, 3])
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    let mut children = Vec::new();
    for p in 1..=3 {
        for k in 0..3 {
            children.push((p * 10 + k, p));
        }
    }
    let values: Vec<String> = children
        .iter()
        .map(|(id, p)| format!("({id}, {p})"))
        .collect();
    conns[1]
        .run(format!("INSERT INTO child VALUES {}", values.join(", ")))
        .await;
    c.wait_rows_everywhere("SELECT id, parent_id FROM d.child ORDER BY id", &children)
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    let mut grandchildren = Vec::new();
    for (child, _) in &children {
        for j in 0..2 {
            grandchildren.push((child * 10 + j, *child));
        }
    }
    let values: Vec<String> = grandchildren
        .iter()
        .map(|(id, ch)| format!("({id}, {ch})"))
        .collect();
    conns[2]
        .run(format!(
            "INSERT INTO grandchild VALUES {}",
            values.join(", ")
        ))
        .await;
    c.wait_rows_everywhere(
        "SELECT id, child_id FROM d.grandchild ORDER BY id",
        &grandchildren,
    )
    .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;

    // Deleting a parent through node 1 cascades, on every node, two levels
    // down.
    conns[0].run("DELETE FROM parent WHERE id = 1").await;
    children.retain(|(_, p)| *p != 1);
    grandchildren.retain(|(_, ch)| children.iter().any(|(c, _)| c == ch));
    c.wait_rows_everywhere("SELECT id FROM d.parent ORDER BY id", &[2, 3])
        .await;
    c.wait_rows_everywhere("SELECT id, parent_id FROM d.child ORDER BY id", &children)
        .await;
    c.wait_rows_everywhere(
        "SELECT id, child_id FROM d.grandchild ORDER BY id",
        &grandchildren,
    )
    .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;

    // ON UPDATE CASCADE through node 2, then a delete through node 3.
    conns[1].run("UPDATE parent SET id = 20 WHERE id = 2").await;
    for (_, p) in children.iter_mut() {
        if *p == 2 {
            *p = 20;
        }
    }
    c.wait_rows_everywhere("SELECT id, parent_id FROM d.child ORDER BY id", &children)
        .await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    conns[2].run("DELETE FROM parent WHERE id = 3").await;
    children.retain(|(_, p)| *p != 3);
    grandchildren.retain(|(_, ch)| children.iter().any(|(c, _)| c == ch));
    c.wait_rows_everywhere("SELECT id, parent_id FROM d.child ORDER BY id", &children)
        .await;
    c.wait_rows_everywhere(
        "SELECT id, child_id FROM d.grandchild ORDER BY id",
        &grandchildren,
    )
    .await;
    assert_eq!(grandchildren.len(), 6);
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["parent", "child", "grandchild"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_applies_after_restart() {
    let mut c = ReplicationCluster::start(3).await;
    let mut a = c.conn(0).await;
    a.run("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    c.wait_table_everywhere("t").await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    let mut expected: BTreeMap<i32, i32> = BTreeMap::new();
    for id in 1..=10 {
        a.run(format!("INSERT INTO t VALUES ({id}, {id})")).await;
        expected.insert(id, id);
    }
    let rows = |e: &BTreeMap<i32, i32>| e.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>();
    c.wait_rows_everywhere("SELECT id, v FROM d.t ORDER BY id", &rows(&expected))
        .await;

    // Node 3's replicator dies; nodes 1 and 2 (a quorum) go on writing,
    // schema changes included.
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.kill(2).await;
    let mut b = c.conn(1).await;
    for id in 11..=30 {
        a.run(format!("INSERT INTO t VALUES ({id}, {id})")).await;
        expected.insert(id, id);
    }
    b.run("UPDATE t SET v = v * 2 WHERE id <= 10").await;
    for id in 1..=10 {
        *expected.get_mut(&id).unwrap() *= 2;
    }
    b.run("DELETE FROM t WHERE id = 5").await;
    expected.remove(&5);
    c.wait_rows_on(
        &[0, 1],
        "SELECT id, v FROM d.t ORDER BY id",
        &rows(&expected),
    )
    .await;
    b.run("ALTER TABLE t ADD COLUMN w INT NOT NULL DEFAULT 7")
        .await;
    c.wait_rows_on(
        &[0, 1],
        "SELECT COUNT(*) FROM d.t WHERE w = 7",
        &[expected.len() as i64],
    )
    .await;
    c.wait_same_last_committed_on(&[0, 1], REPLICATION_TIMEOUT)
        .await;
    a.run("INSERT INTO t VALUES (31, 31, 8)").await;
    expected.insert(31, 31);
    let full = "SELECT id, v, w FROM d.t ORDER BY id";
    let full_rows: Vec<(i32, i32, i32)> = expected
        .iter()
        .map(|(k, v)| (*k, *v, if *k == 31 { 8 } else { 7 }))
        .collect();
    c.wait_rows_on(&[0, 1], full, &full_rows).await;
    // Node 3's MariaDB did not see any of it.
    let stale: Option<Vec<i64>> = c.query_server(2, "SELECT COUNT(*) FROM d.t").await;
    assert_eq!(stale, Some(vec![10]));

    // Restarted, node 3 catches up from the log and is a full member again.
    let restarted = Instant::now();
    c.restart(2).await;
    c.wait_rows_everywhere(full, &full_rows).await;
    eprintln!(
        "node3 caught up {:?} after its restart began",
        restarted.elapsed()
    );
    c.wait_cluster_size(3, REPLICATION_TIMEOUT).await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["t"]).await;
    let mut node3 = c.conn(2).await;
    node3.run("INSERT INTO t VALUES (32, 32, 9)").await;
    c.wait_rows_everywhere("SELECT COUNT(*) FROM d.t WHERE id = 32", &[1i64])
        .await;
}

/// Each node draws auto-increment values from its own residue class,
/// set from the membership: concurrent inserts through every node never
/// pick the same id, so none of them conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_increment_spacing_follows_membership() {
    const PER_NODE: usize = 40;
    let c = ReplicationCluster::start(3).await;
    let n = c.len();
    // The spacing follows the membership within a moment of it changing.
    let mut offsets = BTreeSet::new();
    for i in 0..n {
        let offset = c
            .eventually(
                &format!("node{} to space auto-increments by {n}", i + 1),
                REPLICATION_TIMEOUT,
                async || {
                    let mut conn = c.conn(i).await;
                    let row: Option<(u64, u64)> = conn
                        .query_first("SELECT @@auto_increment_increment, @@auto_increment_offset")
                        .await
                        .ok()?;
                    let (increment, offset) = row?;
                    (increment == n as u64).then_some(offset)
                },
            )
            .await;
        assert!(
            (1..=n as u64).contains(&offset),
            "node{}: offset {offset}",
            i + 1
        );
        offsets.insert(offset);
    }
    assert_eq!(offsets.len(), n, "every node has its own offset");

    c.conn(0)
        .await
        .run("CREATE TABLE ai (id INT AUTO_INCREMENT PRIMARY KEY, node INT NOT NULL)")
        .await;
    c.wait_table_everywhere("ai").await;
    let mut writers = Vec::new();
    for i in 0..n {
        let mut conn = c.conn(i).await;
        writers.push(tokio::spawn(async move {
            for _ in 0..PER_NODE {
                conn.exec(format!("INSERT INTO ai (node) VALUES ({i})"))
                    .await
                    .map_err(|e| format!("node{}: {e}", i + 1))?;
            }
            Ok::<_, String>(())
        }));
    }
    for w in writers {
        w.await.expect("writer task").unwrap_or_else(|e| {
            panic!(
                "an insert failed (ids collided across nodes?): {e}\n{}",
                c.logs()
            )
        });
    }
    let expected: Vec<(i64,)> = vec![((n * PER_NODE) as i64,)];
    c.wait_rows_everywhere("SELECT COUNT(*) FROM d.ai", &expected)
        .await;
    // Each node's ids are in its own residue class.
    let rows: Vec<(u64, u64)> = c
        .query_server(0, "SELECT id, node FROM d.ai")
        .await
        .expect("rows");
    let mut class_of_node = BTreeMap::new();
    for (id, node) in rows {
        let class = id % n as u64;
        assert_eq!(
            *class_of_node.entry(node).or_insert(class),
            class,
            "node{} inserted ids of two residue classes",
            node + 1
        );
    }
    assert_eq!(class_of_node.len(), n);
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["ai"]).await;
}
