//! One node, fully working: the real `replicator run` binary in front of a
//! real MariaDB, as a one-voter cluster. Clients of every kind, every
//! statement class with its outcome, first-committer-wins, bad input, and
//! a kill -9 with transactions prepared but not committed.

use std::time::Duration;

use e2e::TestServer;
use e2e::sidecar::{APP_PASSWORD, APP_USER, Sidecar, prepare_server};
use mysql_async::prelude::*;

struct Node {
    server: TestServer,
    sidecar: Sidecar,
    _dir: tempfile::TempDir,
}

async fn node(extra: &[&str]) -> Node {
    let server = TestServer::start().await.unwrap();
    prepare_server(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::bootstrap(&server, &dir.path().join("replicator"), extra).await;
    Node {
        server,
        sidecar,
        _dir: dir,
    }
}

/// Prepared XA transactions left on the server.
async fn xa_recover(server: &TestServer) -> Vec<String> {
    let mut root = server.root_conn().await.unwrap();
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = root.query("XA RECOVER").await.unwrap();
    rows.into_iter()
        .map(|r| String::from_utf8_lossy(&r.3).into_owned())
        .collect()
}

async fn count(server: &TestServer, sql: &str) -> i64 {
    let mut root = server.root_conn().await.unwrap();
    root.query_first(sql).await.unwrap().unwrap()
}

fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_classes_keep_mariadb_semantics() {
    let n = node(&[]).await;
    let mut c = n.sidecar.conn().await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();

    // Autocommit write: durable, visible directly, nothing left prepared.
    c.query_drop("INSERT INTO t VALUES (1, 10)").await.unwrap();
    assert_eq!(count(&n.server, "SELECT COUNT(*) FROM d.t").await, 1);
    assert!(xa_recover(&n.server).await.is_empty());

    // ROLLBACK leaves nothing.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (2, 20)").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    assert_eq!(count(&n.server, "SELECT COUNT(*) FROM d.t").await, 1);

    // Savepoints.
    c.query_drop("START TRANSACTION").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (3, 30)").await.unwrap();
    c.query_drop("SAVEPOINT s1").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (4, 40)").await.unwrap();
    c.query_drop("ROLLBACK TO SAVEPOINT s1").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let ids: Vec<i32> = c.query("SELECT id FROM t ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 3]);

    // COMMIT AND CHAIN: the next transaction starts at once.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE t SET v = 11 WHERE id = 1")
        .await
        .unwrap();
    c.query_drop("COMMIT AND CHAIN").await.unwrap();
    c.query_drop("UPDATE t SET v = 12 WHERE id = 1")
        .await
        .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    assert_eq!(
        count(&n.server, "SELECT v FROM d.t WHERE id = 1").await,
        11,
        "the chained transaction was a transaction: its update rolled back"
    );

    // autocommit off: statements accumulate until COMMIT; SET autocommit=1
    // commits what is open, as MariaDB does.
    c.query_drop("SET autocommit = 0").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (5, 50)").await.unwrap();
    assert_eq!(
        count(&n.server, "SELECT COUNT(*) FROM d.t WHERE id = 5").await,
        0
    );
    c.query_drop("SET autocommit = 1").await.unwrap();
    assert_eq!(
        count(&n.server, "SELECT COUNT(*) FROM d.t WHERE id = 5").await,
        1
    );

    // DDL commits the open transaction first.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (6, 60)").await.unwrap();
    c.query_drop("CREATE TABLE t2 (id INT PRIMARY KEY)")
        .await
        .unwrap();
    assert_eq!(
        count(&n.server, "SELECT COUNT(*) FROM d.t WHERE id = 6").await,
        1
    );

    // Multi-statement with a transaction inside.
    c.query_drop("BEGIN; INSERT INTO t VALUES (7, 70); INSERT INTO t VALUES (8, 80); COMMIT")
        .await
        .unwrap();
    assert_eq!(
        count(&n.server, "SELECT COUNT(*) FROM d.t WHERE id IN (7, 8)").await,
        2
    );

    // Prepared statements inside and outside transactions.
    let stmt = c.prep("INSERT INTO t VALUES (?, ?)").await.unwrap();
    c.exec_drop(&stmt, (9, 90)).await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.exec_drop(&stmt, (10, 100)).await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    assert_eq!(
        count(&n.server, "SELECT COUNT(*) FROM d.t WHERE id IN (9, 10)").await,
        1
    );

    // SQL-level PREPARE / EXECUTE writes too.
    c.query_drop("PREPARE p FROM 'INSERT INTO t VALUES (11, 110)'; EXECUTE p")
        .await
        .unwrap();
    assert_eq!(
        count(&n.server, "SELECT COUNT(*) FROM d.t WHERE id = 11").await,
        1
    );

    // A read-only transaction is never replicated: between two writes the
    // node's replicated write-sets and last committed seqno move by one.
    c.query_drop("INSERT INTO t VALUES (12, 120)")
        .await
        .unwrap();
    let before = wsrep(&mut c).await;
    c.query_drop("START TRANSACTION READ ONLY; SELECT * FROM t; COMMIT")
        .await
        .unwrap();
    c.query_drop("BEGIN; SELECT * FROM t; UPDATE t SET v = v WHERE id = -1; COMMIT")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (13, 130)")
        .await
        .unwrap();
    let after = wsrep(&mut c).await;
    assert_eq!(after.0, before.0 + 1, "only the write was replicated");
    assert_eq!(after.1, before.1 + 1, "only the write was ordered");

    // Client-side XA is refused with a clear error and changes nothing.
    let err = c.query_drop("XA START 'mine'").await.unwrap_err();
    assert_eq!(code(&err), Some(1235), "{err}");
    assert!(err.to_string().contains("XA"), "{err}");
    assert!(xa_recover(&n.server).await.is_empty());
}

/// (wsrep_replicated, wsrep_last_committed) through the replicator.
async fn wsrep(c: &mut mysql_async::Conn) -> (u64, u64) {
    let rows: Vec<(String, String)> = c
        .query("SHOW STATUS WHERE Variable_name IN ('wsrep_replicated', 'wsrep_last_committed')")
        .await
        .unwrap();
    let get = |name: &str| {
        rows.iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing from {rows:?}"))
            .1
            .parse()
            .unwrap()
    };
    (get("wsrep_replicated"), get("wsrep_last_committed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_committer_wins_never_a_lost_update() {
    let n = node(&[]).await;
    let mut setup = n.sidecar.conn().await;
    setup
        .query_drop(
            "CREATE TABLE acct (id INT PRIMARY KEY, balance INT); INSERT INTO acct VALUES (1, 100)",
        )
        .await
        .unwrap();
    let mut a = n.sidecar.conn().await;
    let mut b = n.sidecar.conn().await;
    a.query_drop("BEGIN").await.unwrap();
    b.query_drop("BEGIN").await.unwrap();
    let va: i64 = a
        .query_first("SELECT balance FROM acct WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    let vb: i64 = b
        .query_first("SELECT balance FROM acct WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    a.query_drop(format!(
        "UPDATE acct SET balance = {} WHERE id = 1",
        va + 10
    ))
    .await
    .unwrap();
    a.query_drop("COMMIT").await.unwrap();
    // b read the old balance: its update must not win.
    let b_update = b
        .query_drop(format!("UPDATE acct SET balance = {} WHERE id = 1", vb + 1))
        .await;
    let b_commit = match b_update {
        Ok(()) => b.query_drop("COMMIT").await,
        Err(e) => Err(e),
    };
    let err = b_commit.expect_err("the second committer must fail");
    assert!(
        matches!(code(&err), Some(1213) | Some(1020)),
        "1213 or 1020 expected, got {err}"
    );
    assert_eq!(
        count(&n.server, "SELECT balance FROM d.acct WHERE id = 1").await,
        110
    );
    assert!(xa_recover(&n.server).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let n = node(&[]).await;
    let mut c = n.sidecar.conn().await;
    c.query_drop("CREATE TABLE nopk (a INT); CREATE TABLE ok (id INT PRIMARY KEY)")
        .await
        .unwrap();
    // A table without a primary key: refused, nothing written.
    let err = c
        .query_drop("INSERT INTO nopk VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(1173), "{err}");
    assert!(err.to_string().contains("primary key"), "{err}");
    assert_eq!(count(&n.server, "SELECT COUNT(*) FROM d.nopk").await, 0);
    // The session goes on.
    c.query_drop("INSERT INTO ok VALUES (1)").await.unwrap();

    // Malformed and truncated packets from other clients: those clients
    // are disconnected; this session is untouched.
    for garbage in [
        &b"\x05\x00\x00"[..],                 // a truncated header
        b"\xff\xff\xff\x00\x01\x02",          // a 16 MiB packet that never comes
        b"\x01\x00\x00\x00\x03",              // a command before authenticating
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", // another protocol
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", n.sidecar.port))
            .await
            .unwrap();
        let mut greeting = [0u8; 4];
        s.read_exact(&mut greeting).await.unwrap();
        s.write_all(garbage).await.unwrap();
        drop(s);
    }
    c.query_drop("INSERT INTO ok VALUES (2)").await.unwrap();
    let n_ok: i64 = c
        .query_first("SELECT COUNT(*) FROM ok")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n_ok, 2);
    assert!(xa_recover(&n.server).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_prepared_transactions_resolves_them_from_the_log() {
    let mut n = node(&[]).await;
    let mut setup = n.sidecar.conn().await;
    setup
        .query_drop("CREATE TABLE w (id INT PRIMARY KEY, writer INT)")
        .await
        .unwrap();
    drop(setup);
    let mut acknowledged = Vec::new();
    let mut caught_prepared = false;
    for round in 0..5 {
        // Writers commit as fast as they can; the replicator dies mid-way.
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let opts = n.sidecar.opts();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let Ok(mut c) = mysql_async::Conn::new(opts).await else {
                        return acked;
                    };
                    for i in 0..10_000 {
                        let id = round * 1_000_000 + w * 100_000 + i;
                        match c
                            .query_drop(format!("INSERT INTO w VALUES ({id}, {w})"))
                            .await
                        {
                            Ok(()) => acked.push(id),
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(400)).await;
        n.sidecar.kill().await;
        for w in writers {
            acknowledged.extend(w.await.unwrap());
        }
        if !xa_recover(&n.server).await.is_empty() {
            caught_prepared = true;
        }
        n.sidecar.restart().await;
        assert!(
            xa_recover(&n.server).await.is_empty(),
            "after restart nothing is left prepared"
        );
        if caught_prepared && round >= 1 {
            break;
        }
    }
    assert!(
        caught_prepared,
        "no kill landed with a transaction prepared"
    );
    // Every acknowledged commit survived.
    let mut c = n.sidecar.conn().await;
    let present: Vec<i32> = c.query("SELECT id FROM w").await.unwrap();
    let present: std::collections::HashSet<i32> = present.into_iter().collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    // And the node still works.
    c.query_drop("INSERT INTO w VALUES (-1, -1)").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_client_works_through_the_replicator() {
    let n = node(&[]).await;
    let port = n.sidecar.port.to_string();
    // The mariadb command-line client.
    let out = tokio::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port, "-u", APP_USER])
        .arg(format!("-p{APP_PASSWORD}"))
        .args(["-N", "-B", "d", "-e"])
        .arg("CREATE TABLE c (id INT PRIMARY KEY, s VARCHAR(10)); INSERT INTO c VALUES (1,'cli'); SELECT s FROM c")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cli");
    // The node's state as Galera status variables, to the same client.
    let out = tokio::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port, "-u", APP_USER])
        .arg(format!("-p{APP_PASSWORD}"))
        .args([
            "-N",
            "-B",
            "-e",
            "SHOW GLOBAL STATUS LIKE 'wsrep_ready'; SHOW STATUS LIKE 'wsrep_cluster_s%s'; \
             SHOW STATUS LIKE 'wsrep_cluster_si_e'",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "wsrep_ready\tON\nwsrep_cluster_status\tPrimary\nwsrep_cluster_size\t1"
    );
    // PyMySQL.
    let script = format!(
        "import pymysql\n\
         c = pymysql.connect(host='127.0.0.1', port={port}, user='{APP_USER}', password='{APP_PASSWORD}', database='d')\n\
         cur = c.cursor()\n\
         cur.execute('INSERT INTO c VALUES (%s, %s)', (2, 'py'))\n\
         c.commit()\n\
         cur.execute('SELECT s FROM c ORDER BY id')\n\
         print(','.join(r[0] for r in cur.fetchall()))\n"
    );
    let out = tokio::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cli,py");
    // mysql_async, binary protocol.
    let mut c = n.sidecar.conn().await;
    c.exec_drop("INSERT INTO c VALUES (?, ?)", (3, "async"))
        .await
        .unwrap();
    let n_rows: i64 = c
        .exec_first("SELECT COUNT(*) FROM c WHERE id > ?", (0,))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n_rows, 3);
    // sysbench oltp_read_write with prepared statements: no errors.
    let common = [
        "--db-driver=mysql".to_string(),
        "--mysql-host=127.0.0.1".into(),
        format!("--mysql-port={port}"),
        format!("--mysql-user={APP_USER}"),
        format!("--mysql-password={APP_PASSWORD}"),
        "--mysql-db=d".into(),
        "--tables=2".into(),
        "--table-size=1000".into(),
        "--db-ps-mode=auto".into(),
    ];
    let prepare = tokio::process::Command::new("sysbench")
        .arg("oltp_read_write")
        .args(&common)
        .arg("prepare")
        .output()
        .await
        .unwrap();
    assert!(
        prepare.status.success(),
        "{}",
        String::from_utf8_lossy(&prepare.stderr)
    );
    let run = tokio::process::Command::new("sysbench")
        .arg("oltp_read_write")
        .args(&common)
        .args(["--threads=4", "--events=400", "--time=0"])
        .arg("run")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let events = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("total number of events:"))
        .map(|n| n.trim().parse::<u64>().unwrap());
    assert_eq!(events, Some(400), "{text}");
    assert!(!text.contains("FATAL"), "{text}");
}

/// Rows reach the client byte for byte, also when the proxy edits the
/// status flags of the response: binary rows always start with 0x00, and
/// so does a text row whose first column is '' — neither is an OK packet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_rows_reach_the_client_unchanged() {
    let n = node(&[]).await;
    let mut c = n.sidecar.conn().await;
    c.query_drop(
        "CREATE TABLE r (id INT PRIMARY KEY, v INT, s VARCHAR(10)); \
         CREATE PROCEDURE p() SELECT 257, 7",
    )
    .await
    .unwrap();

    // Binary protocol, a write in autocommit that returns rows (the proxy
    // clears IN_TRANS in the response): as a row, 257 is 01 01 00 00.
    let rows: Vec<(i32, i32)> = c
        .exec(
            "INSERT INTO r (id, v) VALUES (?, ?) RETURNING id, v",
            (257, 7),
        )
        .await
        .unwrap();
    assert_eq!(rows, vec![(257, 7)]);
    let rows: Vec<(i64, i64)> = c.exec("CALL p()", ()).await.unwrap();
    assert_eq!(rows, vec![(257, 7)]);

    // Text protocol, first column '': the same write, and a multi-statement
    // query (the proxy sets MORE_RESULTS_EXISTS in the first result).
    let rows: Vec<(String, i64)> = c
        .query("INSERT INTO r (id, v, s) VALUES (258, 9, '') RETURNING s, 1357913")
        .await
        .unwrap();
    assert_eq!(rows, vec![(String::new(), 1357913)]);
    let sql = "SELECT '', 12345, 'x'; SELECT 1";
    let mut result = c.query_iter(sql).await.unwrap();
    let through: Vec<(String, String, String)> = result.collect().await.unwrap();
    let second: Vec<i64> = result.collect().await.unwrap();
    drop(result);
    let mut root = n.server.root_conn().await.unwrap();
    let mut result = root.query_iter(sql).await.unwrap();
    let direct: Vec<(String, String, String)> = result.collect().await.unwrap();
    drop(result);
    assert_eq!(through, direct, "the same rows as directly from MariaDB");
    assert_eq!(through, vec![("".into(), "12345".into(), "x".into())]);
    assert_eq!(second, vec![1]);

    // The writes committed as written.
    let stored: Vec<(i32, i32)> = root
        .query("SELECT id, v FROM d.r ORDER BY id")
        .await
        .unwrap();
    assert_eq!(stored, vec![(257, 7), (258, 9)]);
}

/// Run a Python script (PyMySQL) against the node; its standard output.
async fn python(script: &str) -> String {
    e2e::output_of(
        tokio::process::Command::new("/usr/bin/python3").args(["-c", script]),
        Duration::from_secs(120),
    )
    .await
}

/// COM_SET_OPTION turns multi-statements on and off as MariaDB does, and a
/// statement hidden behind another is handled like any other: a write is
/// replicated, client XA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn com_set_option_switches_multi_statements() {
    let n = node(&[]).await;
    let mut c = n.sidecar.conn().await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let port = n.sidecar.port;
    let script = format!(
        r#"
import pymysql
from pymysql.constants import CLIENT, COMMAND

def connect(flags):
    return pymysql.connect(host='127.0.0.1', port={port}, user='{APP_USER}',
                           password='{APP_PASSWORD}', database='d',
                           autocommit=True, client_flag=flags)

def set_multi(c, on):
    c._execute_command(COMMAND.COM_SET_OPTION, b'\x00\x00' if on else b'\x01\x00')
    c._read_packet()

def run(c, sql):
    cur = c.cursor()
    out = []
    try:
        cur.execute(sql)
        out.append(len(cur.fetchall()))
        while cur.nextset():
            out.append(len(cur.fetchall() or ()))
        return 'ok %s' % out
    except pymysql.MySQLError as e:
        return 'error %d after %s' % (e.args[0], out)

def replicated(c):
    cur = c.cursor()
    cur.execute("SHOW STATUS WHERE Variable_name = 'wsrep_replicated'")
    return int(cur.fetchone()[1])

a = connect(0)
print('off at connect:', run(a, 'SELECT 1; SELECT 2'))
set_multi(a, True)
before = replicated(a)
print('on:', run(a, 'SELECT 1; INSERT INTO t VALUES (1)'))
print('replicated:', replicated(a) - before)
print('hidden xa:', run(a, 'SELECT 1; XA START \'mine\''))
set_multi(a, False)
print('off again:', run(a, 'SELECT 1; SELECT 2'))

b = connect(CLIENT.MULTI_STATEMENTS)
print('on at connect:', run(b, 'SELECT 1; SELECT 2'))
set_multi(b, False)
print('turned off:', run(b, 'SELECT 1; SELECT 2'))
"#
    );
    assert_eq!(
        python(&script).await,
        "off at connect: error 1064 after []\n\
         on: ok [1, 0]\n\
         replicated: 1\n\
         hidden xa: error 1235 after [1]\n\
         off again: error 1064 after []\n\
         on at connect: ok [1, 1]\n\
         turned off: error 1064 after []\n"
    );
    assert_eq!(count(&n.server, "SELECT COUNT(*) FROM d.t").await, 1);
    assert!(xa_recover(&n.server).await.is_empty());
}

/// A multi-statement query that is not UTF-8 (here latin1) is split and
/// each statement handled on its own: the write is replicated, a client XA
/// statement behind a read is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statements_that_are_not_utf8_are_split() {
    let n = node(&[]).await;
    let mut c = n.sidecar.conn().await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(10)); SET NAMES latin1")
        .await
        .unwrap();
    let before = wsrep(&mut c).await;
    let sql: &[u8] = b"SELECT '\xe9;'; INSERT INTO t VALUES (1, '\xe9')";
    let mut result = c.query_iter(sql).await.unwrap();
    let first: Vec<Vec<u8>> = result.collect().await.unwrap();
    let second: Vec<mysql_async::Row> = result.collect().await.unwrap();
    drop(result);
    assert_eq!(first, vec![b"\xe9;".to_vec()]);
    assert!(second.is_empty());
    let after = wsrep(&mut c).await;
    assert_eq!(after.0, before.0 + 1, "the insert was replicated");

    let sql: &[u8] = b"SELECT '\xe9'; XA START 'mine'";
    let err = match c.query_iter(sql).await {
        Ok(mut result) => {
            let _: Vec<Vec<u8>> = result.collect().await.unwrap();
            result.collect::<Vec<u8>>().await.unwrap_err()
        }
        Err(e) => e,
    };
    assert_eq!(code(&err), Some(1235), "{err}");

    // In gbk, 0xBF 0x5C is one character: MariaDB sees a complete literal
    // and a second statement where the proxy sees one literal. The server
    // connection never splits, so MariaDB refuses the query; the client's
    // XA START never runs.
    c.query_drop("SET NAMES gbk").await.unwrap();
    let sql: &[u8] = b"SELECT '\xbf\x5c'; XA START 'mine'; SELECT '";
    let err = c.query_drop(sql).await.unwrap_err();
    assert_eq!(code(&err), Some(1064), "{err}");
    c.query_drop("INSERT INTO t VALUES (2, 'x')").await.unwrap();
    drop(c);

    let mut root = n.server.root_conn().await.unwrap();
    let stored: Vec<(i32, String)> = root
        .query("SELECT id, s FROM d.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(stored, vec![(1, "é".to_string())]);
    assert!(xa_recover(&n.server).await.is_empty());
}

/// COM_STMT_EXECUTE of statement id 0xFFFFFFFF (MariaDB's "the statement
/// prepared last", sent in a pipeline right behind its COM_STMT_PREPARE)
/// runs as that statement: here a COMMIT that ends the client's
/// transaction through the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_of_the_last_prepared_statement_runs_as_that_statement() {
    let n = node(&[]).await;
    let mut c = n.sidecar.conn().await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let port = n.sidecar.port;
    let script = format!(
        r#"
import pymysql, struct
from pymysql.constants import COMMAND
c = pymysql.connect(host='127.0.0.1', port={port}, user='{APP_USER}',
                    password='{APP_PASSWORD}', database='d', autocommit=True)
cur = c.cursor()
cur.execute("SHOW STATUS WHERE Variable_name = 'wsrep_replicated'")
before = int(cur.fetchone()[1])
cur.execute('BEGIN')
cur.execute('INSERT INTO t VALUES (1)')
# Pipelined: prepare, then execute "the last prepared statement".
c._execute_command(COMMAND.COM_STMT_PREPARE, 'COMMIT')
c._execute_command(COMMAND.COM_STMT_EXECUTE, struct.pack('<IBI', 0xFFFFFFFF, 0, 1))
print('prepared:', c._read_packet().get_all_data()[0])
c._next_seq_id = 1
try:
    c._read_packet()
    print('executed: ok')
except pymysql.MySQLError as e:
    print('executed: error', e.args[0])
cur.execute('SELECT @@in_transaction')
print('in transaction:', cur.fetchone()[0])
cur.execute("SHOW STATUS WHERE Variable_name = 'wsrep_replicated'")
print('replicated:', int(cur.fetchone()[1]) - before)
"#
    );
    assert_eq!(
        python(&script).await,
        "prepared: 0\nexecuted: ok\nin transaction: 0\nreplicated: 1\n"
    );
    assert_eq!(count(&n.server, "SELECT COUNT(*) FROM d.t").await, 1);
    assert!(xa_recover(&n.server).await.is_empty());
}

/// `mysqldump` run directly against MariaDB (`extra` options), its output.
async fn mysqldump_direct(server: &TestServer, extra: &[&str]) -> Vec<u8> {
    let out = tokio::process::Command::new("mysqldump")
        .arg("--no-defaults")
        .arg(format!("--socket={}", server.config().socket().display()))
        .args(["-u", "root"])
        .args(extra)
        .args(["src", "t"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Feed `sql` to the `mariadb` client connected through the replicator,
/// into database `db`: (success, stderr).
async fn restore_through(sidecar: &Sidecar, db: &str, sql: &[u8]) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &sidecar.port.to_string()])
        .args(["-u", APP_USER])
        .arg(format!("-p{APP_PASSWORD}"))
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(sql).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The INSERT statements of a dump.
fn inserts(dump: &[u8]) -> Vec<Vec<u8>> {
    dump.split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"INSERT") || l.starts_with(b"("))
        .map(<[u8]>::to_vec)
        .collect()
}

/// LOCK TABLES keeps MariaDB's semantics where the replicator can, and a
/// write under it is refused with a clear error rather than committed
/// unreplicated; UNLOCK TABLES commits nothing unless tables were locked.
/// Dumps: one made with --skip-add-locks restores through the replicator
/// (its rows replicated), one with LOCK TABLES gets the clear error and
/// writes nothing; mysqldump --single-transaction works through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_tables_and_dumps() {
    let n = node(&[]).await;
    let mut c = n.sidecar.conn().await;
    c.query_drop("CREATE TABLE x (id INT PRIMARY KEY)")
        .await
        .unwrap();

    // UNLOCK TABLES inside a transaction (no tables locked) commits nothing.
    c.query_drop("BEGIN; INSERT INTO x VALUES (1); UNLOCK TABLES; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(count(&n.server, "SELECT COUNT(*) FROM d.x").await, 0);

    // Under LOCK TABLES: reads work, a write is refused clearly.
    c.query_drop("LOCK TABLES x WRITE").await.unwrap();
    let rows: Vec<i32> = c.query("SELECT id FROM x").await.unwrap();
    assert!(rows.is_empty());
    let before = wsrep(&mut c).await;
    let err = c.query_drop("INSERT INTO x VALUES (2)").await.unwrap_err();
    assert_eq!(code(&err), Some(1192), "{err}");
    assert!(err.to_string().contains("LOCK TABLES"), "{err}");
    c.query_drop("UNLOCK TABLES").await.unwrap();
    c.query_drop("INSERT INTO x VALUES (2)").await.unwrap();
    // With autocommit off, reads under LOCK TABLES work too.
    c.query_drop("SET autocommit = 0; LOCK TABLES x READ")
        .await
        .unwrap();
    let rows: Vec<i32> = c.query("SELECT id FROM x").await.unwrap();
    assert_eq!(rows, vec![2]);
    c.query_drop("UNLOCK TABLES; SET autocommit = 1")
        .await
        .unwrap();
    // BEGIN releases the locks, as in MariaDB, and starts a transaction.
    c.query_drop("LOCK TABLES x WRITE; BEGIN; INSERT INTO x VALUES (3); COMMIT")
        .await
        .unwrap();
    let after = wsrep(&mut c).await;
    assert_eq!(after.0, before.0 + 2, "both inserts were replicated");
    assert_eq!(count(&n.server, "SELECT COUNT(*) FROM d.x").await, 2);

    // A source table, dumped directly from MariaDB.
    let mut root = n.server.root_conn().await.unwrap();
    root.query_drop(
        "CREATE DATABASE src; CREATE DATABASE r1; CREATE DATABASE r2; \
         CREATE TABLE src.t (id INT PRIMARY KEY, s VARCHAR(20), b BLOB) CHARSET utf8mb4; \
         INSERT INTO src.t VALUES (1, '', x'00ff'), (2, 'é;''x', NULL), (3, NULL, 'b')",
    )
    .await
    .unwrap();
    let source: Vec<(i32, Option<String>, Option<Vec<u8>>)> =
        root.query("SELECT * FROM src.t ORDER BY id").await.unwrap();

    // The default dump locks the table around its INSERT: refused.
    let dump = mysqldump_direct(&n.server, &[]).await;
    assert!(dump.windows(11).any(|w| w == b"LOCK TABLES"));
    let (ok, stderr) = restore_through(&n.sidecar, "r1", &dump).await;
    assert!(!ok, "the restore must stop at the refused write");
    assert!(stderr.contains("ERROR 1192"), "{stderr}");
    assert!(stderr.contains("--skip-add-locks"), "{stderr}");
    assert_eq!(count(&n.server, "SELECT COUNT(*) FROM r1.t").await, 0);

    // Without the locks it restores, through the cluster.
    let before = wsrep(&mut c).await;
    let dump = mysqldump_direct(&n.server, &["--skip-add-locks"]).await;
    let (ok, stderr) = restore_through(&n.sidecar, "r2", &dump).await;
    assert!(ok, "{stderr}");
    let restored: Vec<(i32, Option<String>, Option<Vec<u8>>)> =
        root.query("SELECT * FROM r2.t ORDER BY id").await.unwrap();
    assert_eq!(restored, source);
    let after = wsrep(&mut c).await;
    // The dump's DDL and its INSERT, each ordered through the log (DDL in
    // total order), and all committed in order.
    let replicated = after.0 - before.0;
    assert!(replicated >= 2, "the INSERT was replicated: {replicated}");
    assert_eq!(after.1 - before.1, replicated, "and committed in order");

    // mysqldump --single-transaction through the replicator: START
    // TRANSACTION WITH CONSISTENT SNAPSHOT, then UNLOCK TABLES, then
    // savepoints around each table — all in one transaction.
    let out = tokio::process::Command::new("mysqldump")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &n.sidecar.port.to_string()])
        .args(["-u", APP_USER])
        .arg(format!("-p{APP_PASSWORD}"))
        .args(["--single-transaction", "src", "t"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let direct = mysqldump_direct(&n.server, &["--single-transaction"]).await;
    assert!(!inserts(&direct).is_empty());
    assert_eq!(inserts(&out.stdout), inserts(&direct));
    assert!(xa_recover(&n.server).await.is_empty());
}

/// COMMIT / ROLLBACK AND CHAIN with no transaction open start a tracked
/// (XA) transaction, and the session's completion_type is honoured:
/// CHAIN chains a plain COMMIT, RELEASE closes the connection after it;
/// the replicator's own commits are not affected by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_transactions_and_completion_type() {
    let n = node(&[]).await;
    let mut c = n.sidecar.conn().await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let has = |id: i32| {
        let server = &n.server;
        async move { count(server, &format!("SELECT COUNT(*) FROM d.t WHERE id = {id}")).await == 1 }
    };

    // AND CHAIN with nothing open: the chained transaction is one.
    c.query_drop("COMMIT AND CHAIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    assert!(!has(1).await, "the chained transaction rolled back");
    let before = wsrep(&mut c).await;
    c.query_drop("ROLLBACK AND CHAIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    assert!(!has(2).await, "not committed before COMMIT");
    c.query_drop("COMMIT").await.unwrap();
    assert!(has(2).await);
    assert_eq!(wsrep(&mut c).await.0, before.0 + 1, "replicated");

    // completion_type = CHAIN: a plain COMMIT chains, with or without a
    // transaction open; AND NO CHAIN still does not.
    c.query_drop("SET completion_type = 'CHAIN'").await.unwrap();
    c.query_drop("BEGIN; INSERT INTO t VALUES (3); COMMIT; INSERT INTO t VALUES (4); ROLLBACK")
        .await
        .unwrap();
    assert!(has(3).await);
    assert!(!has(4).await, "the chained transaction rolled back");
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (5)").await.unwrap();
    c.query_drop("ROLLBACK AND NO CHAIN").await.unwrap();
    assert!(!has(5).await, "a transaction chained from nothing");
    c.query_drop("BEGIN; INSERT INTO t VALUES (6); COMMIT AND NO CHAIN")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (7)").await.unwrap();
    assert!(has(6).await && has(7).await, "autocommit again");

    // completion_type = RELEASE: COMMIT commits, then the connection ends.
    c.query_drop("SET completion_type = 'RELEASE'")
        .await
        .unwrap();
    let before = wsrep(&mut c).await;
    c.query_drop("BEGIN; INSERT INTO t VALUES (8)")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    assert!(c.query_drop("SELECT 1").await.is_err(), "released");
    assert!(has(8).await);
    let mut c = n.sidecar.conn().await;
    assert_eq!(wsrep(&mut c).await.0, before.0 + 1, "replicated");

    // The replicator's own commit of a READ ONLY transaction (before DDL)
    // does not release the connection.
    c.query_drop("SET completion_type = 'RELEASE'; START TRANSACTION READ ONLY")
        .await
        .unwrap();
    c.query_drop("SELECT COUNT(*) FROM t").await.unwrap();
    c.query_drop("CREATE TABLE t2 (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t2 VALUES (1)").await.unwrap();
    assert_eq!(count(&n.server, "SELECT COUNT(*) FROM d.t2").await, 1);
    assert!(xa_recover(&n.server).await.is_empty());
}

/// A server without the settings replication depends on: the replicator
/// refuses to start, names every setting to change, and changes nothing;
/// with them fixed it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_checks_refuse_a_misconfigured_server() {
    let server = TestServer::start().await.unwrap();
    prepare_server(&server).await;
    let mut root = server.root_conn().await.unwrap();
    root.query_drop(
        "SET GLOBAL binlog_format = 'STATEMENT'; SET GLOBAL binlog_row_image = 'MINIMAL'; \
         SET GLOBAL innodb_snapshot_isolation = OFF; \
         SET GLOBAL innodb_flush_log_at_trx_commit = 2; SET GLOBAL sync_binlog = 0",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("replicator");
    let run = tokio::process::Command::new(e2e::binary("replicator"))
        .args(["run", "--bootstrap", "--listen"])
        .arg(format!("127.0.0.1:{}", e2e::ports::free_port()))
        .arg("--group-listen")
        .arg(format!("127.0.0.1:{}", e2e::ports::free_port()))
        .arg("--mariadb-socket")
        .arg(server.config().socket())
        .args(["--user", "root", "--secret", "test-secret", "--data-dir"])
        .arg(&data)
        .env("RUST_LIB_BACKTRACE", "0")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the replicator decides within a minute")
        .expect("run the replicator");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must refuse:\n{text}");
    for setting in [
        "binlog_format=ROW",
        "binlog_row_image=FULL",
        "innodb_snapshot_isolation=ON",
        "innodb_flush_log_at_trx_commit=1",
        "sync_binlog=1",
    ] {
        assert!(
            text.contains(setting),
            "the refusal names `{setting}`:\n{text}"
        );
    }
    // It changed nothing: no schema of its own, the settings as they were.
    let own: Option<String> = root
        .query_first(
            "SELECT schema_name FROM information_schema.schemata \
             WHERE schema_name = 'replicator'",
        )
        .await
        .unwrap();
    assert_eq!(own, None);
    let format: Option<String> = root
        .query_first("SELECT @@global.binlog_format")
        .await
        .unwrap();
    assert_eq!(format.as_deref(), Some("STATEMENT"));

    root.query_drop(
        "SET GLOBAL binlog_format = 'ROW'; SET GLOBAL binlog_row_image = 'FULL'; \
         SET GLOBAL innodb_snapshot_isolation = ON; \
         SET GLOBAL innodb_flush_log_at_trx_commit = 1; SET GLOBAL sync_binlog = 1",
    )
    .await
    .unwrap();
    let sidecar = Sidecar::bootstrap(&server, &data, &[]).await;
    let mut c = sidecar.conn().await;
    c.query_drop("CREATE TABLE started (id INT PRIMARY KEY)")
        .await
        .unwrap();
}
