//! Binlog capture against a real MariaDB: the keys of XA transactions
//! (primary and unique keys, collations, foreign keys and cascades), the
//! payload replayed with `BINLOG` on a second server, transactions that
//! binlog nothing, refused tables, the own schema, rotation, a lost dump
//! connection, and the size limit.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use e2e::TestServer;
use mysql_async::prelude::*;
use replicator::capture::replay::binlog_statements;
use replicator::capture::{Capture, CaptureConfig, CaptureError, Captured, Gtid};
use replicator::certify::KeyKind;
use replicator::keys::{Collation, ColumnValue, RowKeyEncoder, RowKeyValues};
use replicator::writeset::{Body, KeyScope, WriteSetKey};

const TIMEOUT: Duration = Duration::from_secs(10);

fn config() -> CaptureConfig {
    CaptureConfig {
        server_id: 1000,
        allow_tables_without_pk: false,
        max_writeset_bytes: 4 << 20,
        own_schema: "replicator".into(),
        timeout: TIMEOUT,
    }
}

async fn with_schema(setup: &str) -> TestServer {
    let server = TestServer::start().await.unwrap();
    let mut root = server.root_conn().await.unwrap();
    root.query_drop(setup).await.unwrap();
    root.disconnect().await.unwrap();
    server
}

/// Run `statements` in XA transaction `xid` up to `XA PREPARE`; return the
/// session's `@@last_gtid` afterwards.
async fn prepare(conn: &mut mysql_async::Conn, xid: &str, statements: &[&str]) -> Option<Gtid> {
    conn.query_drop(format!("XA START '{xid}'")).await.unwrap();
    for s in statements {
        conn.query_drop(*s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    conn.query_drop(format!("XA END '{xid}'")).await.unwrap();
    conn.query_drop(format!("XA PREPARE '{xid}'"))
        .await
        .unwrap();
    let last: String = conn
        .query_first("SELECT @@last_gtid")
        .await
        .unwrap()
        .unwrap();
    (!last.is_empty()).then(|| last.parse().unwrap())
}

async fn commit(conn: &mut mysql_async::Conn, xid: &str) {
    conn.query_drop(format!("XA COMMIT '{xid}'")).await.unwrap();
}

async fn rollback(conn: &mut mysql_async::Conn, xid: &str) {
    conn.query_drop(format!("XA ROLLBACK '{xid}'"))
        .await
        .unwrap();
}

/// Prepare, take, commit.
async fn capture_one(
    capture: &Capture,
    conn: &mut mysql_async::Conn,
    xid: &str,
    statements: &[&str],
) -> Captured {
    let gtid = prepare(conn, xid, statements).await;
    let captured = capture
        .take(xid.as_bytes(), gtid)
        .await
        .unwrap_or_else(|e| panic!("take {xid}: {e}"))
        .unwrap_or_else(|| panic!("{xid} captured nothing"));
    commit(conn, xid).await;
    captured
}

fn encode(columns: &[ColumnValue<'_>]) -> Vec<u8> {
    match RowKeyEncoder::new().encode(columns).unwrap() {
        RowKeyValues::Key(v) => v,
        RowKeyValues::HasNull => panic!("null"),
    }
}

fn int_key(i: i128) -> Vec<u8> {
    encode(&[ColumnValue::Int(i)])
}

fn text_key(s: &str, collation: &str) -> Vec<u8> {
    encode(&[ColumnValue::Text {
        bytes: s.as_bytes(),
        collation: Collation::from_name(collation),
        prefix_chars: None,
    }])
}

fn row(kind: KeyKind, db: &str, table: &str, index: &str, values: Vec<u8>) -> WriteSetKey {
    WriteSetKey {
        kind,
        scope: KeyScope::Row {
            database: db.into(),
            table: table.into(),
            index: index.into(),
            values,
        },
    }
}

fn table_key(kind: KeyKind, db: &str, table: &str) -> WriteSetKey {
    WriteSetKey {
        kind,
        scope: KeyScope::Table {
            database: db.into(),
            table: table.into(),
        },
    }
}

fn rows_body(c: &Captured) -> (&[u8], &[u8]) {
    match &c.body {
        Body::Rows {
            format_description,
            events,
        } => (format_description, events),
        Body::Toi(_) => panic!("TOI body"),
    }
}

/// CRC-32 (IEEE), as the binlog checksums events.
fn replicator_crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Split concatenated events by the size in each header.
fn split_events(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let size = u32::from_le_bytes(bytes[9..13].try_into().unwrap()) as usize;
        out.push(&bytes[..size]);
        bytes = &bytes[size..];
    }
    out
}

/// Replay a captured body on `conn` in one transaction.
async fn replay(conn: &mut mysql_async::Conn, captured: &Captured) {
    let [fde, events] = binlog_statements(&captured.body).unwrap();
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop(fde).await.unwrap();
    conn.query_drop(events).await.unwrap();
    conn.query_drop("COMMIT").await.unwrap();
}

async fn dump(conn: &mut mysql_async::Conn, sql: &str) -> Vec<Vec<mysql_async::Value>> {
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.unwrap();
    rows.into_iter().map(|r| r.unwrap()).collect()
}

const KEYS_SCHEMA: &str = "CREATE DATABASE d; \
     CREATE TABLE d.t (id INT PRIMARY KEY, u VARCHAR(20) COLLATE utf8mb4_general_ci UNIQUE, v INT); \
     INSERT INTO d.t VALUES (1, 'a', 1), (2, 'b', 2)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cover_every_image_of_primary_and_unique_indexes() {
    let server = with_schema(KEYS_SCHEMA).await;
    let capture = Capture::start(server.root_opts(), config()).await.unwrap();
    let mut c = server.root_conn().await.unwrap();
    let captured = capture_one(
        &capture,
        &mut c,
        "k1",
        &[
            "INSERT INTO d.t VALUES (3, 'c', 3)",
            "UPDATE d.t SET u = 'bb' WHERE id = 2",
            "DELETE FROM d.t WHERE id = 1",
        ],
    )
    .await;
    let ci = "utf8mb4_general_ci";
    let x = KeyKind::Exclusive;
    let expected: HashSet<WriteSetKey> = [
        row(x, "d", "t", "PRIMARY", int_key(3)),
        row(x, "d", "t", "PRIMARY", int_key(2)),
        row(x, "d", "t", "PRIMARY", int_key(1)),
        row(x, "d", "t", "u", text_key("c", ci)),
        row(x, "d", "t", "u", text_key("b", ci)),
        row(x, "d", "t", "u", text_key("bb", ci)),
        row(x, "d", "t", "u", text_key("a", ci)),
    ]
    .into_iter()
    .collect();
    let got: HashSet<WriteSetKey> = captured.keys.iter().cloned().collect();
    assert_eq!(got, expected);
    assert_eq!(captured.keys.len(), expected.len(), "keys are deduplicated");

    // The events are the server's own bytes: each is in the binlog file.
    let (fde, events) = rows_body(&captured);
    assert_eq!(fde[4], 0x0f, "format description first");
    assert_eq!(captured.bytes, fde.len() + events.len());
    let events = split_events(events);
    // One table map and one row event per statement.
    assert_eq!(events.len(), 6, "{events:?}");
    let binlog = std::fs::read(server.config().dir.join("binlog.000001")).unwrap();
    for e in &events {
        assert!(
            binlog.windows(e.len()).any(|w| w == *e),
            "event not byte-identical to the binlog: {e:?}"
        );
    }
    capture.shutdown().await;
    assert!(matches!(
        capture.take(b"k1", captured.gtid.into()).await,
        Err(CaptureError::Stopped(_))
    ));
}

const TYPES_SCHEMA: &str = "CREATE DATABASE d; \
     CREATE TABLE d.all_types ( \
       id INT PRIMARY KEY, \
       ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, \
       mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, \
       bi BIGINT, bu BIGINT UNSIGNED, \
       de DECIMAL(20,6), f FLOAT, d DOUBLE, \
       vc VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci, \
       ch CHAR(10), bin BINARY(4), vb VARBINARY(20), bl BLOB, tx TEXT, \
       dt DATETIME(6), dt0 DATETIME, ts TIMESTAMP(3) NULL, da DATE, tm TIME(2), y YEAR, \
       e ENUM('x','y','z'), st SET('a','b','c'), bt BIT(10), js JSON, \
       vcol INT AS (id * 2) VIRTUAL, uu UUID, i6 INET6, \
       UNIQUE KEY (bu), UNIQUE KEY (dt), UNIQUE KEY (vc(5), tu) \
     ); \
     CREATE DATABASE replicator; \
     CREATE TABLE replicator.seen (id INT PRIMARY KEY, n INT)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_replays_on_another_server() {
    let origin = with_schema(TYPES_SCHEMA).await;
    let replica = with_schema(TYPES_SCHEMA).await;
    let capture = Capture::start(origin.root_opts(), config()).await.unwrap();
    let mut c = origin.root_conn().await.unwrap();
    let mut r = replica.root_conn().await.unwrap();
    let select = "SELECT * FROM d.all_types ORDER BY id";
    let steps: &[(&str, &[&str])] = &[
        (
            "insert",
            &[
                "INSERT INTO d.all_types (id, ti, tu, si, su, mi, mu, i, iu, bi, bu, de, f, d, vc, \
                 ch, bin, vb, bl, tx, dt, dt0, ts, da, tm, y, e, st, bt, js, uu, i6) VALUES \
                 (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, \
                  -9223372036854775808, 18446744073709551615, -12345678901234.123456, 1.5, \
                  -2.25e300, 'Grüße, 世界 🦀', 'pad  ', x'00ff0001', x'deadbeef', \
                  REPEAT(x'c0ffee', 5000), REPEAT('ö', 3000), '2024-02-29 23:59:59.000000', \
                  '1999-12-31 01:02:03', '2030-01-01 00:00:00.123', '0001-01-01', '-838:59:59.99', \
                  2155, 'z', 'a,c', b'1010101010', '{\"k\": [1, 2, null]}', \
                  'f81d4fae-7dec-11d0-a765-00a0c91e6bf6', '2001:db8::1'), \
                 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                  NULL, NULL, NULL, NULL, NULL), \
                 (3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '', '', x'', x'', x'', '', \
                  '2024-01-01 00:00:00.000001', NULL, NULL, NULL, '00:00:00', 0, 'x', '', b'0', '[]', \
                  NULL, '::')",
                "INSERT INTO replicator.seen VALUES (1, 1)",
            ],
        ),
        (
            "update",
            &[
                "UPDATE d.all_types SET vc = 'ÄÖÜ', bu = 1, de = 0.5, dt = NULL, bl = NULL \
                 WHERE id = 1",
                "UPDATE d.all_types SET ti = 7, tx = 'now set', ts = '2001-01-01 00:00:01' \
                 WHERE id = 2",
                // One statement changing both a replicated table and the own
                // schema, the own schema's row event last (it ends the
                // statement).
                "UPDATE d.all_types t, replicator.seen s SET t.i = t.i + 1, s.n = s.n + 1 \
                 WHERE t.id = 3 AND s.id = 1",
            ],
        ),
        ("delete", &["DELETE FROM d.all_types WHERE id IN (1, 3)"]),
    ];
    for (n, (what, statements)) in steps.iter().enumerate() {
        let xid = format!("replay-{n}");
        let captured = capture_one(&capture, &mut c, &xid, statements).await;
        if n == 0 {
            // Row events alone are refused: the format description comes first.
            let [_, events] = binlog_statements(&captured.body).unwrap();
            let mut fresh = replica.root_conn().await.unwrap();
            let err = fresh.query_drop(events).await.unwrap_err();
            assert!(err.to_string().contains("1609"), "{err}");
            fresh.disconnect().await.unwrap();
            // Keys of columns far into the row: the image was walked right.
            let x = KeyKind::Exclusive;
            let keys: HashSet<_> = captured.keys.iter().cloned().collect();
            for id in 1..=3 {
                assert!(keys.contains(&row(x, "d", "all_types", "PRIMARY", int_key(id))));
            }
            assert!(keys.contains(&row(x, "d", "all_types", "bu", int_key(u64::MAX.into()))));
            assert!(keys.contains(&row(x, "d", "all_types", "bu", int_key(0))));
            let vc_tu = encode(&[
                ColumnValue::Text {
                    bytes: "Grüße, 世界 🦀".as_bytes(),
                    collation: Collation::from_name("utf8mb4_unicode_ci"),
                    prefix_chars: Some(5),
                },
                ColumnValue::Int(255),
            ]);
            assert!(
                keys.contains(&row(x, "d", "all_types", "vc", vc_tu)),
                "{keys:?}"
            );
            // PRIMARY ×3, bu ×2 (row 2 is NULL), dt ×2, vc ×2.
            assert_eq!(keys.len(), 9, "{keys:?}");
        }
        replay(&mut r, &captured).await;
        let want = dump(&mut c, select).await;
        let got = dump(&mut r, select).await;
        assert!(!want.is_empty() || *what == "delete");
        assert_eq!(got, want, "after {what}");
        // The own schema is absent from the payload.
        let (_, events) = rows_body(&captured);
        assert!(
            !events.windows(10).any(|w| w == b"replicator"),
            "own schema in the payload after {what}"
        );
    }
    let own: Option<i64> = r
        .query_first("SELECT COUNT(*) FROM replicator.seen")
        .await
        .unwrap();
    assert_eq!(own, Some(0), "own schema replayed");
    capture.shutdown().await;
}

/// The key values of every non-primary index in `captured`, by index.
fn unique_values(captured: &Captured) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = captured
        .keys
        .iter()
        .filter_map(|k| match &k.scope {
            KeyScope::Row { index, values, .. } if index != "PRIMARY" => {
                Some((index.clone(), values.clone()))
            }
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_values_written_differently_get_equal_keys() {
    let server = with_schema(
        "CREATE DATABASE d; CREATE TABLE d.k (id INT PRIMARY KEY, \
           de DECIMAL(12,4) UNIQUE, dt DATETIME(6) UNIQUE, dt2 DATETIME(2) UNIQUE, \
           tm TIME(2) UNIQUE, ts TIMESTAMP(3) NULL UNIQUE, f DOUBLE UNIQUE, y YEAR UNIQUE, \
           e ENUM('a','b') UNIQUE, bn BINARY(4) UNIQUE, ch CHAR(5) UNIQUE, si SMALLINT UNSIGNED UNIQUE)",
    )
    .await;
    let capture = Capture::start(server.root_opts(), config()).await.unwrap();
    let mut c = server.root_conn().await.unwrap();
    let mut take = async |xid: &str, values: &str| {
        let insert = format!("INSERT INTO d.k VALUES {values}");
        let gtid = prepare(&mut c, xid, &[&insert]).await;
        let captured = capture.take(xid.as_bytes(), gtid).await.unwrap().unwrap();
        rollback(&mut c, xid).await;
        unique_values(&captured)
    };
    let a = take(
        "eq-a",
        "(1, -12.5, '2024-01-01 10:00:00.5', '2024-01-01 10:00:00.5', '-01:02:03.4', \
         '2030-01-01 00:00:00.25', -0.0, 2024, 'b', x'01', 'ab', 65535)",
    )
    .await;
    let b = take(
        "eq-b",
        "(2, '-012.5000', '2024-01-01 10:00:00.500000', '2024-01-01 10:00:00.50', \
         '-01:02:03.40', '2030-01-01 00:00:00.250', 0.0, '2024', 2, x'01000000', 'AB  ', 65535)",
    )
    .await;
    assert_eq!(a.len(), 11, "{a:?}");
    // The CHAR column has a case-insensitive collation: 'ab' = 'AB  '.
    assert_eq!(a, b);
    let other = take(
        "eq-c",
        "(3, -12.5001, '2024-01-01 10:00:00.500001', '2024-01-01 10:00:00.51', '-01:02:03.41', \
         '2030-01-01 00:00:00.251', 0.5, 2025, 'a', x'02', 'ac', 65534)",
    )
    .await;
    for ((index, x), (_, y)) in a.iter().zip(&other) {
        assert_ne!(x, y, "index {index}");
    }
    capture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_binlog_nothing_return_none_at_once() {
    let server = with_schema(KEYS_SCHEMA).await;
    let capture = Capture::start(server.root_opts(), config()).await.unwrap();
    let mut fresh = server.root_conn().await.unwrap();
    let mut c = server.root_conn().await.unwrap();
    c.query_drop("CREATE TEMPORARY TABLE d.tmp (id INT PRIMARY KEY)")
        .await
        .unwrap();
    // A session that never binlogged anything.
    let gtid = prepare(&mut fresh, "ro-0", &["SELECT * FROM d.t"]).await;
    assert_eq!(gtid, None);
    assert!(capture.take(b"ro-0", gtid).await.unwrap().is_none());
    commit(&mut fresh, "ro-0").await;
    // A session whose previous transaction wrote (and was taken).
    let written = capture_one(
        &capture,
        &mut c,
        "w-1",
        &["INSERT INTO d.t VALUES (5, 'e', 5)"],
    )
    .await;
    // Its XA COMMIT is the session's last group.
    let last: String = c.query_first("SELECT @@last_gtid").await.unwrap().unwrap();
    let last: Gtid = last.parse().unwrap();
    assert!(last.seq > written.gtid.seq);
    for (xid, statements) in [
        ("ro-1", &["SELECT * FROM d.t"][..]),
        ("ro-2", &["UPDATE d.t SET v = 9 WHERE id = 99"][..]),
        ("ro-3", &["INSERT INTO d.tmp VALUES (1)"][..]),
    ] {
        let started = Instant::now();
        let gtid = prepare(&mut c, xid, statements).await;
        assert_eq!(gtid, Some(last), "{xid} binlogged something");
        assert!(capture.take(xid.as_bytes(), gtid).await.unwrap().is_none());
        assert!(started.elapsed() < Duration::from_secs(2), "{xid} waited");
        commit(&mut c, xid).await;
    }
    // A GTID the tailer has not reached: waits, then times out.
    let short = Capture::start(
        server.root_opts(),
        CaptureConfig {
            timeout: Duration::from_millis(300),
            server_id: 1001,
            ..config()
        },
    )
    .await
    .unwrap();
    let future = Gtid {
        seq: last.seq + 1000,
        ..last
    };
    assert!(matches!(
        short.take(b"nope", Some(future)).await,
        Err(CaptureError::Timeout { .. })
    ));
    short.shutdown().await;
    capture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_insensitive_values_get_equal_keys() {
    let server = with_schema(
        "CREATE DATABASE d; CREATE TABLE d.c (id INT PRIMARY KEY, \
         name VARCHAR(20) COLLATE utf8mb4_general_ci UNIQUE)",
    )
    .await;
    let capture = Capture::start(server.root_opts(), config()).await.unwrap();
    let mut c = server.root_conn().await.unwrap();
    let name_key = |captured: &Captured| {
        captured
            .keys
            .iter()
            .find_map(|k| match &k.scope {
                KeyScope::Row { index, values, .. } if index == "name" => Some(values.clone()),
                _ => None,
            })
            .unwrap()
    };
    let gtid = prepare(&mut c, "ci-1", &["INSERT INTO d.c VALUES (1, 'abc')"]).await;
    let first = capture.take(b"ci-1", gtid).await.unwrap().unwrap();
    rollback(&mut c, "ci-1").await;
    let second = capture_one(
        &capture,
        &mut c,
        "ci-2",
        &["INSERT INTO d.c VALUES (2, 'ABC')"],
    )
    .await;
    assert_eq!(name_key(&first), name_key(&second));
    assert_eq!(name_key(&first), text_key("abc", "utf8mb4_general_ci"));
    assert_ne!(first.keys, second.keys, "primary keys differ");
    capture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_without_primary_key_or_innodb_are_refused() {
    let server = with_schema(
        "CREATE DATABASE d; CREATE TABLE d.nopk (a INT, b INT); \
         CREATE TABLE d.m (id INT PRIMARY KEY) ENGINE=MyISAM",
    )
    .await;
    let capture = Capture::start(server.root_opts(), config()).await.unwrap();
    let mut c = server.root_conn().await.unwrap();

    let gtid = prepare(&mut c, "np-1", &["INSERT INTO d.nopk VALUES (1, 2)"]).await;
    let err = capture.take(b"np-1", gtid).await.unwrap_err();
    assert!(matches!(err, CaptureError::NoPrimaryKey { .. }), "{err}");
    assert!(err.to_string().contains("`d`.`nopk`"), "{err}");
    rollback(&mut c, "np-1").await;

    let gtid = prepare(&mut c, "my-1", &["INSERT INTO d.m VALUES (1)"]).await;
    let err = capture.take(b"my-1", gtid).await.unwrap_err();
    match &err {
        CaptureError::NotInnodb { table, engine, .. } => {
            assert_eq!((table.as_str(), engine.as_str()), ("m", "MyISAM"));
        }
        other => panic!("{other}"),
    }
    rollback(&mut c, "my-1").await;
    capture.shutdown().await;

    let allowing = Capture::start(
        server.root_opts(),
        CaptureConfig {
            allow_tables_without_pk: true,
            ..config()
        },
    )
    .await
    .unwrap();
    let captured = capture_one(
        &allowing,
        &mut c,
        "np-2",
        &["INSERT INTO d.nopk VALUES (3, 4)"],
    )
    .await;
    assert_eq!(
        captured.keys,
        vec![table_key(KeyKind::Exclusive, "d", "nopk")]
    );
    allowing.shutdown().await;
}

const FK_SCHEMA: &str = "CREATE DATABASE d; \
     CREATE TABLE d.p (id INT PRIMARY KEY, code VARCHAR(10) COLLATE utf8mb4_general_ci UNIQUE); \
     CREATE TABLE d.c (id INT PRIMARY KEY, pid INT, \
       FOREIGN KEY (pid) REFERENCES d.p (id) ON DELETE CASCADE); \
     CREATE TABLE d.g (id INT PRIMARY KEY, cid INT, \
       FOREIGN KEY (cid) REFERENCES d.c (id) ON DELETE SET NULL); \
     CREATE TABLE d.byc (id INT PRIMARY KEY, code VARCHAR(10) COLLATE utf8mb4_general_ci, \
       FOREIGN KEY (code) REFERENCES d.p (code)); \
     INSERT INTO d.p VALUES (1, 'one'), (2, 'two'); \
     INSERT INTO d.c VALUES (10, 1), (11, 1); INSERT INTO d.g VALUES (100, 10)";

/// The rows transaction fk-1 adds.
const FK_CHILD_ROWS: &str =
    "INSERT INTO d.c VALUES (12, 2), (13, NULL); INSERT INTO d.byc VALUES (1, 'TWO')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_give_shared_parent_keys_and_cascades_lock_children() {
    let server = with_schema(FK_SCHEMA).await;
    let capture = Capture::start(server.root_opts(), config()).await.unwrap();
    let mut c = server.root_conn().await.unwrap();
    let shared = KeyKind::Shared;
    let x = KeyKind::Exclusive;

    let child = capture_one(
        &capture,
        &mut c,
        "fk-1",
        &FK_CHILD_ROWS.split("; ").collect::<Vec<_>>(),
    )
    .await;
    let keys: HashSet<_> = child.keys.iter().cloned().collect();
    assert!(
        keys.contains(&row(shared, "d", "p", "PRIMARY", int_key(2))),
        "{keys:?}"
    );
    assert!(keys.contains(&row(
        shared,
        "d",
        "p",
        "code",
        text_key("two", "utf8mb4_general_ci")
    )));
    assert!(keys.contains(&row(x, "d", "c", "PRIMARY", int_key(13))));
    // The NULL reference holds no parent key; the parent's rows no
    // exclusive ones.
    assert_eq!(
        keys.iter().filter(|k| k.kind == shared).count(),
        2,
        "{keys:?}"
    );

    let parent = capture_one(&capture, &mut c, "fk-2", &["DELETE FROM d.p WHERE id = 1"]).await;
    let keys: HashSet<_> = parent.keys.iter().cloned().collect();
    assert!(keys.contains(&row(x, "d", "p", "PRIMARY", int_key(1))));
    assert!(keys.contains(&table_key(x, "d", "c")), "{keys:?}");
    // Transitively: deleting c's rows sets g.cid to NULL.
    assert!(keys.contains(&table_key(x, "d", "g")), "{keys:?}");
    // d.byc references p without a cascading rule: no table key.
    assert!(!keys.contains(&table_key(x, "d", "byc")));
    // InnoDB's cascaded deletes are not in the binlog: one row event only.
    let (_, events) = rows_body(&parent);
    let row_events = split_events(events)
        .into_iter()
        .filter(|e| matches!(e[4], 0x17..=0x19 | 0x1e..=0x20))
        .count();
    assert_eq!(row_events, 1);
    let left: Option<i64> = c.query_first("SELECT COUNT(*) FROM d.c").await.unwrap();
    assert_eq!(left, Some(2), "the cascade did run on the origin");
    // Replayed on a replica (in the state before fk-2), InnoDB cascades there
    // too.
    let replica = with_schema(&format!("{FK_SCHEMA}; {FK_CHILD_ROWS}")).await;
    let mut r = replica.root_conn().await.unwrap();
    replay(&mut r, &parent).await;
    for table in ["d.p", "d.c", "d.g"] {
        let sql = format!("SELECT * FROM {table} ORDER BY id");
        assert_eq!(
            dump(&mut r, &sql).await,
            dump(&mut c, &sql).await,
            "{table}"
        );
    }
    capture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_schema_changes_are_never_captured() {
    let server = with_schema(&format!(
        "{KEYS_SCHEMA}; CREATE DATABASE replicator; \
         CREATE TABLE replicator.xids (xid VARCHAR(64) PRIMARY KEY)"
    ))
    .await;
    let capture = Capture::start(server.root_opts(), config()).await.unwrap();
    let mut c = server.root_conn().await.unwrap();
    let captured = capture_one(
        &capture,
        &mut c,
        "own-1",
        &[
            "INSERT INTO replicator.xids VALUES ('own-1')",
            "INSERT INTO d.t VALUES (7, 'g', 7)",
            "INSERT INTO replicator.xids VALUES ('own-1b')",
        ],
    )
    .await;
    assert!(!captured.keys.is_empty());
    for k in &captured.keys {
        let db = match &k.scope {
            KeyScope::Row { database, .. } | KeyScope::Table { database, .. } => database,
            KeyScope::Database { database } => database,
        };
        assert_eq!(db, b"d", "{k:?}");
    }
    let (_, events) = rows_body(&captured);
    assert_eq!(
        split_events(events).len(),
        2,
        "one table map, one row event"
    );
    assert!(!events.windows(10).any(|w| w == b"replicator"));
    // A statement whose last row event is the own schema's: the kept row
    // event before it now ends the statement.
    let multi = capture_one(
        &capture,
        &mut c,
        "own-3",
        &[
            "UPDATE d.t, replicator.xids SET d.t.v = d.t.v + 1, replicator.xids.xid = 'own-3' \
           WHERE d.t.id = 7 AND replicator.xids.xid = 'own-1'",
        ],
    )
    .await;
    let (_, events) = rows_body(&multi);
    let events = split_events(events);
    assert_eq!(events.len(), 2, "one table map, one row event");
    let last = events[1];
    assert_eq!(last[4], 0x18, "an update row event");
    assert_eq!(last[19 + 6] & 1, 1, "end-of-statement flag");
    let crc = replicator_crc32(&last[..last.len() - 4]);
    assert_eq!(
        last[last.len() - 4..],
        crc.to_le_bytes(),
        "checksum recomputed"
    );
    // Only the own schema: nothing to replicate.
    let gtid = prepare(
        &mut c,
        "own-2",
        &["INSERT INTO replicator.xids VALUES ('own-2')"],
    )
    .await;
    assert!(gtid.is_some());
    assert!(capture.take(b"own-2", gtid).await.unwrap().is_none());
    commit(&mut c, "own-2").await;
    capture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_follows_rotation_and_survives_a_lost_connection() {
    let server = with_schema(KEYS_SCHEMA).await;
    let capture = Capture::start(server.root_opts(), config()).await.unwrap();
    let mut c = server.root_conn().await.unwrap();
    let first = capture_one(
        &capture,
        &mut c,
        "rot-1",
        &["INSERT INTO d.t VALUES (10, 'j', 1)"],
    )
    .await;
    c.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let second = capture_one(
        &capture,
        &mut c,
        "rot-2",
        &["INSERT INTO d.t VALUES (11, 'k', 1)"],
    )
    .await;
    assert!(second.gtid.seq > first.gtid.seq);
    assert!(
        second
            .keys
            .contains(&row(KeyKind::Exclusive, "d", "t", "PRIMARY", int_key(11)))
    );

    // Kill the dump connection: capture reconnects and resumes.
    let dumps: Vec<u64> = c
        .query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
        .await
        .unwrap();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    c.query_drop(format!("KILL {}", dumps[0])).await.unwrap();
    c.query_drop("FLUSH BINARY LOGS").await.unwrap();
    for n in 0..3 {
        let xid = format!("rot-3-{n}");
        let captured = capture_one(
            &capture,
            &mut c,
            &xid,
            &[&format!("INSERT INTO d.t VALUES ({}, 'm{n}', 1)", 20 + n)],
        )
        .await;
        assert!(captured.keys.contains(&row(
            KeyKind::Exclusive,
            "d",
            "t",
            "PRIMARY",
            int_key(20 + i128::from(n))
        )));
    }
    let now: Vec<u64> = c
        .query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
        .await
        .unwrap();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], dumps[0], "a new dump connection");
    capture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_over_the_size_limit_are_refused() {
    let server =
        with_schema("CREATE DATABASE d; CREATE TABLE d.b (id INT PRIMARY KEY, data LONGBLOB)")
            .await;
    let capture = Capture::start(
        server.root_opts(),
        CaptureConfig {
            max_writeset_bytes: 64 << 10,
            ..config()
        },
    )
    .await
    .unwrap();
    let mut c = server.root_conn().await.unwrap();
    let small = capture_one(
        &capture,
        &mut c,
        "sz-1",
        &["INSERT INTO d.b VALUES (1, REPEAT('x', 1000))"],
    )
    .await;
    assert!(small.bytes < 64 << 10);
    let gtid = prepare(
        &mut c,
        "sz-2",
        &["INSERT INTO d.b VALUES (2, REPEAT('x', 100000))"],
    )
    .await;
    match capture.take(b"sz-2", gtid).await {
        Err(CaptureError::TooLarge { bytes, limit }) => {
            assert!(bytes > limit && limit == 64 << 10, "{bytes} {limit}");
        }
        other => panic!("{other:?}"),
    }
    rollback(&mut c, "sz-2").await;
    capture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_dump_connection_is_kept_by_heartbeats() {
    let server = with_schema(KEYS_SCHEMA).await;
    let capture = Capture::start(server.root_opts(), config()).await.unwrap();
    let mut c = server.root_conn().await.unwrap();
    let q = "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'";
    let before: Vec<u64> = c.query(q).await.unwrap();
    // Longer than the tailer's idle timeout (5 s): without heartbeats it
    // would have replaced the connection.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after: Vec<u64> = c.query(q).await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before, after);
    capture_one(
        &capture,
        &mut c,
        "idle-1",
        &["INSERT INTO d.t VALUES (9, 'i', 9)"],
    )
    .await;
    capture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_metadata_is_refreshed() {
    let server = with_schema(KEYS_SCHEMA).await;
    let capture = Capture::start(server.root_opts(), config()).await.unwrap();
    let mut c = server.root_conn().await.unwrap();
    capture_one(
        &capture,
        &mut c,
        "st-1",
        &["INSERT INTO d.t VALUES (3, 'c', 3)"],
    )
    .await;
    // DDL without telling capture: the column count no longer matches the
    // cached metadata, which is re-read.
    c.query_drop("ALTER TABLE d.t ADD COLUMN w INT FIRST, ADD UNIQUE KEY (w)")
        .await
        .unwrap();
    let captured = capture_one(
        &capture,
        &mut c,
        "st-2",
        &["INSERT INTO d.t VALUES (44, 4, 'd', 4)"],
    )
    .await;
    let x = KeyKind::Exclusive;
    assert!(
        captured
            .keys
            .contains(&row(x, "d", "t", "PRIMARY", int_key(4)))
    );
    assert!(captured.keys.contains(&row(x, "d", "t", "w", int_key(44))));
    // Told about DDL, capture reads the new metadata at once.
    c.query_drop("ALTER TABLE d.t DROP INDEX w").await.unwrap();
    capture.schema_changed();
    let captured = capture_one(
        &capture,
        &mut c,
        "st-3",
        &["INSERT INTO d.t VALUES (55, 5, 'e', 5)"],
    )
    .await;
    assert_eq!(captured.keys.len(), 2, "{:?}", captured.keys);
    capture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_resumes_after_the_server_restarts() {
    let mut server = with_schema(KEYS_SCHEMA).await;
    let short = Duration::from_secs(6);
    let capture = Capture::start(
        server.root_opts(),
        CaptureConfig {
            timeout: short,
            ..config()
        },
    )
    .await
    .unwrap();
    let mut c = server.root_conn().await.unwrap();
    let first = capture_one(
        &capture,
        &mut c,
        "rs-1",
        &["INSERT INTO d.t VALUES (3, 'c', 3)"],
    )
    .await;
    drop(c);
    server.kill().await;
    let next = Some(Gtid {
        seq: first.gtid.seq + 2,
        ..first.gtid
    });
    // While the server is gone, takes fail: first by waiting out the
    // timeout, then sooner (capture is known to be down).
    assert!(matches!(
        capture.take(b"rs-x", next).await,
        Err(CaptureError::Timeout { .. } | CaptureError::Stopped(_))
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = Instant::now();
        let result = capture.take(b"rs-x", next).await;
        if matches!(result, Err(CaptureError::Stopped(_))) && started.elapsed() < short * 2 / 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "takes never failed fast while the server was down: {result:?}"
        );
    }

    let config = server.config().clone();
    *server = replicator::mariadb_server::MariadbServer::start(config)
        .await
        .unwrap();
    let mut c = server.root_conn().await.unwrap();
    let second = capture_one(
        &capture,
        &mut c,
        "rs-2",
        &["INSERT INTO d.t VALUES (4, 'd', 4)"],
    )
    .await;
    assert!(second.gtid.seq > first.gtid.seq);
    assert!(
        second
            .keys
            .contains(&row(KeyKind::Exclusive, "d", "t", "PRIMARY", int_key(4)))
    );
    capture.shutdown().await;
}
