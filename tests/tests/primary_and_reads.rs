//! The primary component as clients see it, causal reads, and the HTTP
//! operations surface, on a real three-node cluster (see
//! `e2e::replication_cluster`):
//!
//! - a node cut off from the others (nftables on its group port) refuses
//!   every statement but status queries with 1047 within the election
//!   timeout, accepts no write while cut off, and catches up after the
//!   heal, while the majority keeps committing;
//! - with `wsrep_sync_wait = 1`, a read on one node always sees a write
//!   acknowledged on another; while the node cannot apply, such a read
//!   waits and then fails with 1205 instead of answering stale data;
//! - `/health` follows the primary component (200, 503 on the cut-off
//!   node, 200 after the heal) and `/metrics` exposes the wsrep gauges.
//!
//! Every wait polls a condition with a deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::http::{health, http_get};
use e2e::partition::Partition;
use e2e::replication_cluster::{Client, REPLICATION_TIMEOUT, ReplicationCluster};

/// Raft timing of the clusters that get cut: a follower that hears no
/// leader for a random time in [min, max] ms starts an election, and a
/// member cut off from the quorum stops being primary within max (its
/// leader's last quorum acknowledgement is at most that old); the
/// primary status is recomputed every heartbeat.
const HEARTBEAT_MS: u64 = 100;
const ELECTION_MIN_MS: u64 = 500;
const ELECTION_MAX_MS: u64 = 1000;
/// Slack for a loaded two-core machine (three MariaDBs and three
/// replicators) on top of what the timing allows.
const MARGIN_MS: u64 = 1000;

fn timing_flags() -> Vec<String> {
    vec![
        "--heartbeat-ms".into(),
        HEARTBEAT_MS.to_string(),
        "--election-timeout-min-ms".into(),
        ELECTION_MIN_MS.to_string(),
        "--election-timeout-max-ms".into(),
        ELECTION_MAX_MS.to_string(),
    ]
}

/// How long after the cut a node may still count itself primary.
fn loss_bound() -> Duration {
    Duration::from_millis(ELECTION_MAX_MS + HEARTBEAT_MS + MARGIN_MS)
}

const T_ROWS: &str = "SELECT id, origin FROM d.t ORDER BY id";

fn server_error(e: &mysql_async::Error) -> Option<(u16, String, String)> {
    match e {
        mysql_async::Error::Server(s) => Some((s.code, s.state.clone(), s.message.clone())),
        _ => None,
    }
}

/// Whether `e` is Galera's refusal outside the primary component.
fn is_not_primary(e: &mysql_async::Error) -> bool {
    server_error(e).is_some_and(|(code, state, _)| code == 1047 && state == "08S01")
}

fn rows(expected: &BTreeMap<i32, String>) -> Vec<(i32, String)> {
    expected.iter().map(|(k, v)| (*k, v.clone())).collect()
}

/// One `SHOW STATUS LIKE 'wsrep%'` variable through `client`.
async fn status_of(client: &mut Client, name: &str) -> String {
    let rows: Vec<(String, String)> = client
        .query(format!("SHOW STATUS LIKE '{name}'"))
        .await
        .unwrap_or_else(|e| panic!("SHOW STATUS through node{}: {e}", client.node + 1));
    assert_eq!(rows.len(), 1, "one row for {name}: {rows:?}");
    rows[0].1.clone()
}

/// Every kind of write a client could send, through `client` on a node
/// outside the primary component: each must be refused with 1047 at once
/// (well before any commit timeout). `id` is a key no row has.
async fn assert_writes_refused(c: &ReplicationCluster, client: &mut Client, id: i32) {
    let attempts = [
        format!("INSERT INTO t VALUES ({id}, 'cut')"),
        format!("REPLACE INTO t VALUES ({id}, 'cut')"),
        "UPDATE t SET origin = 'cut'".to_string(),
        "DELETE FROM t".to_string(),
        "BEGIN".to_string(),
        format!(
            "INSERT INTO t VALUES ({id}, 'a'); INSERT INTO t VALUES ({}, 'b')",
            id + 1
        ),
        "CREATE TABLE cut (id INT PRIMARY KEY)".to_string(),
    ];
    for sql in &attempts {
        let started = Instant::now();
        let outcome = client.exec(sql).await;
        let took = started.elapsed();
        match &outcome {
            Err(e) if is_not_primary(e) => {}
            other => panic!(
                "`{sql}` through the cut-off node{}: expected 1047 (08S01), got {other:?}\n{}",
                client.node + 1,
                c.logs()
            ),
        }
        assert!(
            took < Duration::from_secs(2),
            "`{sql}` was refused only after {took:?}"
        );
    }
    // A prepared statement: refused at COM_STMT_PREPARE already.
    use mysql_async::prelude::Queryable;
    let prepared = client
        .exec_drop("INSERT INTO t VALUES (?, ?)", (id + 2, "cut"))
        .await;
    assert!(
        prepared.as_ref().is_err_and(is_not_primary),
        "a prepared INSERT through the cut-off node: expected 1047, got {prepared:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_node_refuses_with_1047_then_catches_up() {
    let flags = timing_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = ReplicationCluster::start_with(3, &flags).await;
    let mut conns = Vec::new();
    for i in 0..3 {
        conns.push(c.conn(i).await);
    }
    conns[0]
        .run("CREATE TABLE t (id INT PRIMARY KEY, origin VARCHAR(20) NOT NULL)")
        .await;
    c.wait_table_everywhere("t").await;
    let mut expected = BTreeMap::new();
    for (i, conn) in conns.iter_mut().enumerate() {
        let origin = format!("node{}", i + 1);
        conn.run(format!("INSERT INTO t VALUES ({}, '{origin}')", i + 1))
            .await;
        expected.insert(i as i32 + 1, origin);
    }
    c.wait_rows_everywhere(T_ROWS, &rows(&expected)).await;
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    let before: Vec<(i32, String)> = c.query_server(2, T_ROWS).await.unwrap();
    assert_eq!(before, rows(&expected));

    // Cut node3 off on the group port: its clients still reach it.
    let cut_node = 2;
    let sidecar = c.sidecar(cut_node);
    let cut = Instant::now();
    let partition = Partition::isolate(&sidecar.host, sidecar.group_port);

    // Until it notices, node3 still serves reads; from then on every
    // statement but status queries gets 1047. Probed with a read: a write
    // sent before it notices would wait for the cluster (its outcome
    // unknown until the heal).
    let time_to_1047 = c
        .eventually(
            "node3 to refuse statements with 1047",
            loss_bound() * 3,
            async || match conns[cut_node].exec("SELECT COUNT(*) FROM t").await {
                Err(e) if is_not_primary(&e) => Some(cut.elapsed()),
                Ok(()) => None,
                Err(e) => panic!("node3: a read failed with something else than 1047: {e}"),
            },
        )
        .await;
    // A write is refused straight away too.
    assert_writes_refused(&c, &mut conns[cut_node], 300).await;
    let time_to_write_1047 = cut.elapsed();
    eprintln!(
        "node3 cut off: first 1047 (read probe) after {time_to_1047:?}, writes refused by \
         {time_to_write_1047:?}; bound {:?} (election timeout max {ELECTION_MAX_MS} ms + \
         heartbeat {HEARTBEAT_MS} ms + margin {MARGIN_MS} ms)",
        loss_bound()
    );
    assert!(
        time_to_1047 <= loss_bound(),
        "node3 served clients for {time_to_1047:?} after it was cut off (bound {:?})\n{}",
        loss_bound(),
        c.logs()
    );
    // The writes were sent right after the probe's refusal; each round
    // trip is short, but the machine may be loaded.
    assert!(
        time_to_write_1047 <= loss_bound() + Duration::from_secs(1),
        "node3 refused writes only {time_to_write_1047:?} after it was cut off"
    );
    // Status queries still answer, with the node's view.
    assert_eq!(
        status_of(&mut conns[cut_node], "wsrep_cluster_status").await,
        "non-Primary"
    );
    assert_eq!(status_of(&mut conns[cut_node], "wsrep_ready").await, "OFF");
    // A new connection to the cut-off node is let in and can ask for the
    // status, and nothing else. (With the settings given, the client does
    // not ask the server for them with a `SELECT @@…` at connect, which
    // the node refuses too: only status and settings statements run
    // outside the primary component.)
    let opts = c
        .opts(cut_node)
        .max_allowed_packet(Some(16 << 20))
        .wait_timeout(Some(28_800));
    let mut fresh = tokio::time::timeout(Duration::from_secs(10), mysql_async::Conn::new(opts))
        .await
        .expect("connecting to the cut-off node3 in time")
        .unwrap_or_else(|e| panic!("connecting to the cut-off node3: {e}"));
    {
        use mysql_async::prelude::Queryable;
        let status: Vec<(String, String)> = fresh
            .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_status', 'wsrep_local_state_comment')")
            .await
            .unwrap();
        assert_eq!(
            status,
            [
                (
                    "wsrep_cluster_status".to_string(),
                    "non-Primary".to_string()
                ),
                (
                    "wsrep_local_state_comment".to_string(),
                    "Initialized".to_string()
                ),
            ]
        );
        let refused = fresh.query_drop("SELECT COUNT(*) FROM t").await;
        assert!(
            refused.as_ref().is_err_and(is_not_primary),
            "a read on a new connection to node3: {refused:?}"
        );
        let refused = fresh
            .query_drop(format!("INSERT INTO t VALUES ({}, 'cut')", 600))
            .await;
        assert!(
            refused.as_ref().is_err_and(is_not_primary),
            "a write on a new connection to node3: {refused:?}"
        );
        let _ = fresh.disconnect().await;
    }

    // The majority keeps committing; node3 keeps refusing and its
    // database does not change.
    for k in 0..20 {
        let writer = k % 2;
        let id = 100 + k as i32;
        let origin = format!("node{}", writer + 1);
        conns[writer]
            .run(format!("INSERT INTO t VALUES ({id}, '{origin}')"))
            .await;
        expected.insert(id, origin);
        let outcome = conns[cut_node]
            .exec(format!("INSERT INTO t VALUES ({}, 'cut')", 400 + k))
            .await;
        assert!(
            outcome.as_ref().is_err_and(is_not_primary),
            "write {k} through the cut-off node3: {outcome:?}"
        );
        let on_node3: Vec<(i32, String)> = c.query_server(cut_node, T_ROWS).await.unwrap();
        assert_eq!(
            on_node3, before,
            "node3's table changed while it was cut off"
        );
    }
    c.wait_rows_on(&[0, 1], T_ROWS, &rows(&expected)).await;
    assert_eq!(
        status_of(&mut conns[0], "wsrep_cluster_status").await,
        "Primary"
    );
    assert_eq!(
        status_of(&mut conns[cut_node], "wsrep_cluster_status").await,
        "non-Primary"
    );
    assert_writes_refused(&c, &mut conns[cut_node], 500).await;
    let on_node3: Vec<(i32, String)> = c.query_server(cut_node, T_ROWS).await.unwrap();
    assert_eq!(
        on_node3, before,
        "node3's table changed while it was cut off"
    );

    // Heal: node3 is primary again and has every row the majority wrote.
    let healed = Instant::now();
    drop(partition);
    c.eventually(
        "node3 to be primary again",
        REPLICATION_TIMEOUT,
        async || {
            (status_of(&mut conns[cut_node], "wsrep_cluster_status").await == "Primary")
                .then_some(())
        },
    )
    .await;
    eprintln!("node3 primary again {:?} after the heal", healed.elapsed());
    c.wait_rows_everywhere(T_ROWS, &rows(&expected)).await;
    // And it takes writes again, which reach everyone.
    conns[cut_node]
        .run("INSERT INTO t VALUES (1000, 'node3')")
        .await;
    expected.insert(1000, "node3".into());
    c.wait_rows_everywhere(T_ROWS, &rows(&expected)).await;
    // None of the refused writes ever shows up: once every node has the
    // same last commit, the tables are exactly the acknowledged rows.
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    for i in 0..3 {
        let now: Vec<(i32, String)> = c.query_server(i, T_ROWS).await.unwrap();
        assert_eq!(now, rows(&expected), "node{} after the heal", i + 1);
    }
    let tables: Vec<i64> = c
        .query_server(
            2,
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = 'd' AND table_name = 'cut'",
        )
        .await
        .unwrap();
    assert_eq!(tables, [0], "the refused CREATE TABLE never ran");
    c.assert_tables_identical(&["t"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn causal_reads_see_the_latest_write_from_another_node() {
    // The causal wait is bounded by the commit timeout: short here, so
    // that the timeout case below is quick.
    const COMMIT_TIMEOUT_MS: u64 = 3000;
    let timeout = COMMIT_TIMEOUT_MS.to_string();
    let c = ReplicationCluster::start_with(3, &["--commit-timeout-ms", &timeout]).await;
    let mut writer = c.conn(0).await;
    writer
        .run("CREATE TABLE t (id INT PRIMARY KEY, origin VARCHAR(20) NOT NULL)")
        .await;
    c.wait_table_everywhere("t").await;
    let mut causal = c.conn(1).await;
    causal.run("SET SESSION wsrep_sync_wait = 1").await;
    let mut plain = c.conn(1).await;

    // Write on node1, then at once read on node2: the causal read always
    // sees the write. A plain read, sent first, may not (reported).
    const ROUNDS: i32 = 200;
    let mut plain_misses = 0;
    let mut causal_time = Duration::ZERO;
    for k in 1..=ROUNDS {
        writer
            .run(format!("INSERT INTO t VALUES ({k}, 'node1')"))
            .await;
        let seen: Option<i64> = plain
            .query_first(format!("SELECT COUNT(*) FROM t WHERE id = {k}"))
            .await
            .unwrap();
        if seen != Some(1) {
            plain_misses += 1;
        }
        let started = Instant::now();
        // Every fifth round inside an explicit transaction (its BEGIN
        // waits too), the others autocommit reads.
        let seen: Vec<(i32, String)> = if k % 5 == 0 {
            causal.run("START TRANSACTION").await;
            let r = causal
                .query(format!("SELECT id, origin FROM t WHERE id = {k}"))
                .await;
            causal.run("COMMIT").await;
            r
        } else {
            causal
                .query(format!("SELECT id, origin FROM t WHERE id = {k}"))
                .await
        }
        .unwrap_or_else(|e| panic!("causal read {k}: {e}\n{}", c.logs()));
        causal_time += started.elapsed();
        assert_eq!(
            seen,
            [(k, "node1".to_string())],
            "round {k}: a causal read on node2 missed the write acknowledged on node1\n{}",
            c.logs()
        );
    }
    eprintln!(
        "{ROUNDS} rounds: every causal read saw the write (mean {:?} each); plain reads \
         sent just before missed it {plain_misses} times",
        causal_time / ROUNDS as u32
    );

    // The control: node2 cannot apply (its table is locked on the server,
    // where the replicator's applier waits for it). A plain read answers
    // at once without the new row; a causal read waits for the row, and
    // when the wait outlasts the timeout it fails with 1205 and says so
    // instead of answering stale data.
    let mut root = c.server(1).root_conn().await.unwrap();
    use mysql_async::prelude::Queryable;
    root.query_drop("LOCK TABLES d.t READ").await.unwrap();
    writer.run("INSERT INTO t VALUES (5000, 'node1')").await;
    let seen: Option<i64> = plain
        .query_first("SELECT COUNT(*) FROM t WHERE id = 5000")
        .await
        .unwrap();
    assert_eq!(
        seen,
        Some(0),
        "node2 applied a write-set while its table was locked"
    );
    let started = Instant::now();
    let timed_out = causal
        .query_first::<i64>("SELECT COUNT(*) FROM t WHERE id = 5000")
        .await;
    let waited = started.elapsed();
    eprintln!("causal read while node2 could not apply: {timed_out:?} after {waited:?}");
    match timed_out.as_ref().map_err(server_error) {
        Err(Some((1205, _, message))) => assert!(
            message.contains("wsrep_sync_wait"),
            "the timeout says what timed out: {message}"
        ),
        other => panic!(
            "a causal read on a node that cannot apply: expected 1205, got {other:?}\n{}",
            c.logs()
        ),
    }
    assert!(
        waited >= Duration::from_millis(COMMIT_TIMEOUT_MS) - Duration::from_millis(100),
        "the causal read gave up after {waited:?}, before the {COMMIT_TIMEOUT_MS} ms timeout"
    );
    assert!(
        waited < Duration::from_millis(COMMIT_TIMEOUT_MS * 3),
        "the causal read took {waited:?} for a {COMMIT_TIMEOUT_MS} ms timeout"
    );
    // The session is still usable, and once node2 can apply, the same
    // causal read answers with the row.
    let reading = tokio::spawn(async move {
        let started = Instant::now();
        let r = causal
            .query_first::<i64>("SELECT COUNT(*) FROM t WHERE id = 5000")
            .await;
        (r, started.elapsed())
    });
    root.query_drop("UNLOCK TABLES").await.unwrap();
    let (seen, took) = reading.await.unwrap();
    eprintln!("causal read after the unlock: {seen:?} in {took:?}");
    assert_eq!(seen.unwrap(), Some(1), "the causal read after the unlock");
    c.wait_same_last_committed(REPLICATION_TIMEOUT).await;
    c.assert_tables_identical(&["t"]).await;
}

/// `/metrics` of node `i`, parsed: every sample's value by name. Checks
/// the exposition format on the way: a `# TYPE name gauge` line before
/// each sample, and a number in each.
async fn metrics(c: &ReplicationCluster, i: usize) -> BTreeMap<String, f64> {
    let (code, headers, body) = http_get(&c.http_address(i), "/metrics")
        .await
        .unwrap_or_else(|e| panic!("GET /metrics on node{}: {e}", i + 1));
    assert_eq!(code, 200, "/metrics on node{}: {body}", i + 1);
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert!(
        content_type.is_some_and(|t| t.starts_with("text/plain") && t.contains("version=0.0.4")),
        "Prometheus text format: {content_type:?}"
    );
    let mut typed = std::collections::BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert_eq!(kind, "gauge", "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("a sample is `name value`: {line:?}"));
        assert!(
            typed.contains(name),
            "sample {name} has no # TYPE line before it"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("sample {name}: not a number: {value:?}"));
        samples.insert(name.to_string(), value);
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoint_follows_primary_and_sync() {
    let flags = timing_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = ReplicationCluster::start_with(3, &flags).await;
    let mut writer = c.conn(0).await;
    writer
        .run("CREATE TABLE t (id INT PRIMARY KEY, origin VARCHAR(20) NOT NULL)")
        .await;
    writer.run("INSERT INTO t VALUES (1, 'node1')").await;
    let last = c.wait_same_last_committed(REPLICATION_TIMEOUT).await;

    // Healthy cluster: 200 everywhere; the gauges show it.
    for i in 0..3 {
        let (code, body) = health(&c, i)
            .await
            .unwrap_or_else(|| panic!("node{}: no answer on /health", i + 1));
        assert_eq!(
            code,
            200,
            "/health on node{} of a healthy cluster: {body}",
            i + 1
        );
        assert_eq!(body.trim(), "Synced (Primary)", "node{}", i + 1);
        let m = metrics(&c, i).await;
        for (name, want) in [
            ("replicator_wsrep_cluster_size", 3.0),
            ("replicator_wsrep_ready", 1.0),
            ("replicator_wsrep_connected", 1.0),
            ("replicator_wsrep_local_state", 4.0),
            ("replicator_wsrep_last_committed", last as f64),
            ("replicator_primary", 1.0),
        ] {
            assert_eq!(m.get(name), Some(&want), "node{}: {name} in {m:?}", i + 1);
        }
        for name in [
            "replicator_wsrep_local_cert_failures",
            "replicator_wsrep_local_bf_aborts",
            "replicator_wsrep_local_recv_queue",
            "replicator_wsrep_replicated",
            "replicator_wsrep_received",
        ] {
            assert!(
                m.contains_key(name),
                "node{}: {name} missing from {m:?}",
                i + 1
            );
        }
    }
    // Node1 replicated its row; the others received it.
    assert!(metrics(&c, 0).await["replicator_wsrep_replicated"] >= 1.0);
    assert!(metrics(&c, 2).await["replicator_wsrep_received"] >= 1.0);
    // Not a health check path: not found.
    let (code, _, _) = http_get(&c.http_address(0), "/nothing").await.unwrap();
    assert_eq!(code, 404);

    // Cut node3 off: its /health turns 503 within the election timeout
    // (HTTP has its own port, so the checker still reaches it).
    let sidecar = c.sidecar(2);
    let cut = Instant::now();
    let partition = Partition::isolate(&sidecar.host, sidecar.group_port);
    let to_503 = c
        .eventually(
            "node3's /health to answer 503",
            loss_bound() * 3,
            async || {
                let (code, body) = health(&c, 2).await?;
                assert!(
                    code == 200 || code == 503,
                    "/health answered {code}: {body}"
                );
                (code == 503).then(|| (cut.elapsed(), body))
            },
        )
        .await;
    eprintln!(
        "node3's /health: 503 ({:?}) {:?} after the cut; bound {:?}",
        to_503.1.trim(),
        to_503.0,
        loss_bound()
    );
    assert!(
        to_503.0 <= loss_bound(),
        "node3 was reported healthy for {:?} after it was cut off (bound {:?})",
        to_503.0,
        loss_bound()
    );
    assert!(to_503.1.contains("non-Primary"), "{}", to_503.1);
    let m = metrics(&c, 2).await;
    assert_eq!(m.get("replicator_primary"), Some(&0.0), "{m:?}");
    assert_eq!(m.get("replicator_wsrep_ready"), Some(&0.0), "{m:?}");
    // The majority stays healthy (after a new election, if node3 led).
    for i in 0..2 {
        c.eventually(
            &format!("node{}'s /health to answer 200", i + 1),
            REPLICATION_TIMEOUT,
            async || (health(&c, i).await?.0 == 200).then_some(()),
        )
        .await;
    }
    writer.run("INSERT INTO t VALUES (2, 'node1')").await;
    let (code, _) = health(&c, 2).await.unwrap();
    assert_eq!(code, 503, "node3 is still cut off");

    // Heal: 200 again on node3, and everywhere.
    let healed = Instant::now();
    drop(partition);
    c.eventually(
        "node3's /health to answer 200 again",
        REPLICATION_TIMEOUT,
        async || (health(&c, 2).await?.0 == 200).then_some(()),
    )
    .await;
    let back = healed.elapsed();
    let applied = c.last_committed(2).await;
    eprintln!(
        "node3's /health: 200 again {back:?} after the heal (last committed then {applied:?})"
    );
    for i in 0..3 {
        let (code, body) = health(&c, i).await.unwrap();
        assert_eq!(code, 200, "node{} after the heal: {body}", i + 1);
        assert_eq!(metrics(&c, i).await.get("replicator_primary"), Some(&1.0));
    }
    c.wait_rows_everywhere(
        "SELECT id, origin FROM d.t ORDER BY id",
        &[(1, "node1".to_string()), (2, "node1".to_string())],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_a_rejoined_node_catches_up() {
    let flags = timing_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = ReplicationCluster::start_with(3, &flags).await;
    let mut writer = c.conn(0).await;
    writer
        .run("CREATE TABLE t (id INT PRIMARY KEY, origin VARCHAR(20) NOT NULL)")
        .await;
    writer.run("INSERT INTO t VALUES (1, 'node1')").await;
    c.wait_rows_everywhere(T_ROWS, &[(1, "node1".to_string())])
        .await;

    // Node3 misses writes while cut off...
    let sidecar = c.sidecar(2);
    let partition = Partition::isolate(&sidecar.host, sidecar.group_port);
    c.eventually(
        "node3's /health to answer 503",
        loss_bound() * 3,
        async || (health(&c, 2).await?.0 == 503).then_some(()),
    )
    .await;
    let mut expected = vec![(1, "node1".to_string())];
    for id in 2..=21 {
        writer
            .run(format!("INSERT INTO t VALUES ({id}, 'node1')"))
            .await;
        expected.push((id, "node1".to_string()));
    }
    // ... and cannot apply them after the heal while its table is locked
    // on its server (the applier waits for the lock).
    let mut root = c.server(2).root_conn().await.unwrap();
    use mysql_async::prelude::Queryable;
    root.query_drop("LOCK TABLES d.t READ").await.unwrap();
    drop(partition);
    c.eventually(
        "node3 back in the primary component",
        REPLICATION_TIMEOUT,
        async || (metrics(&c, 2).await.get("replicator_primary") == Some(&1.0)).then_some(()),
    )
    .await;
    let on_node3: Vec<(i32, String)> = c.query_server(2, T_ROWS).await.unwrap();
    assert_eq!(
        on_node3,
        [(1, "node1".to_string())],
        "node3 cannot apply yet"
    );
    // Primary, but not synced: not a target for a load balancer yet.
    let (code, body) = health(&c, 2).await.unwrap();
    let m = metrics(&c, 2).await;
    eprintln!(
        "node3 primary again with 20 write-sets not applied: /health {code} {:?}, \
         wsrep_local_state {:?}, wsrep_local_recv_queue {:?}",
        body.trim(),
        m.get("replicator_wsrep_local_state"),
        m.get("replicator_wsrep_local_recv_queue"),
    );
    assert_eq!(
        code, 503,
        "node3 is reported healthy before it applied what it missed: {body}"
    );
    assert_ne!(m.get("replicator_wsrep_local_state"), Some(&4.0), "{m:?}");

    // Once it has caught up: synced and healthy.
    root.query_drop("UNLOCK TABLES").await.unwrap();
    c.wait_rows_everywhere(T_ROWS, &expected).await;
    c.eventually(
        "node3's /health to answer 200",
        REPLICATION_TIMEOUT,
        async || (health(&c, 2).await?.0 == 200).then_some(()),
    )
    .await;
}
