//! The proxy's relaying against a real MariaDB: authentication passes
//! through (a wrong password is refused by the server itself), text and
//! binary protocol, multi-statement queries and multi-results, LOCAL
//! INFILE, prepared statements, and the `mariadb` command-line client.

use e2e::TestServer;
use e2e::sidecar::{Sidecar, prepare_server};
use mysql_async::prelude::*;

struct Proxied {
    server: TestServer,
    sidecar: Sidecar,
    port: u16,
    _dir: tempfile::TempDir,
}

/// A MariaDB with the real replicator in front of it.
async fn start() -> Proxied {
    let server = TestServer::start().await.unwrap();
    prepare_server(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::bootstrap(&server, &dir.path().join("replicator"), &[]).await;
    let port = sidecar.port;
    Proxied {
        server,
        sidecar,
        port,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_work_through_the_proxy_as_directly() {
    let p = start().await;
    let err = mysql_async::Conn::new(p.sidecar.opts().pass(Some("wrong")))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Access denied"),
        "the server's own refusal: {err}"
    );
    let mut c = p.sidecar.conn().await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    // Text protocol, multi-statement, multi-results.
    c.query_drop("INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b')")
        .await
        .unwrap();
    let mut result = c
        .query_iter("SELECT id FROM t ORDER BY id; SELECT v FROM t ORDER BY id")
        .await
        .unwrap();
    let ids: Vec<i32> = result.collect().await.unwrap();
    let vs: Vec<String> = result.collect().await.unwrap();
    drop(result);
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(vs, vec!["a", "b"]);
    // Binary protocol with parameters, prepared once, executed many times.
    let stmt = c.prep("INSERT INTO t VALUES (?, ?)").await.unwrap();
    for i in 3..20 {
        c.exec_drop(&stmt, (i, format!("v{i}"))).await.unwrap();
    }
    let rows: Vec<(i32, String)> = c
        .exec("SELECT id, v FROM t WHERE id > ? ORDER BY id", (17,))
        .await
        .unwrap();
    assert_eq!(rows, vec![(18, "v18".into()), (19, "v19".into())]);
    // An error in the middle of a session leaves it usable.
    let err = c.query_drop("SELECT * FROM missing").await.unwrap_err();
    assert!(err.to_string().contains("1146"), "{err}");
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(19));
    // A result bigger than one 16 MiB packet.
    let big: Option<String> = c
        .query_first("SELECT REPEAT('x', 20000000)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(big.map(|s| s.len()), Some(20_000_000));
    c.disconnect().await.unwrap();

    // The command-line client, LOCAL INFILE included.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "100\tx\n101\ty\n").unwrap();
    let out = tokio::process::Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &p.port.to_string(),
            "-u",
            "app",
            "-papp-pw",
        ])
        .args(["--local-infile=1", "--skip-ssl", "-N", "-B", "d", "-e"])
        .arg(format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE t; SELECT COUNT(*), MAX(id) FROM t",
            file.path().display()
        ))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "21\t101");
    // Same rows seen directly.
    let mut root = p.server.root_conn().await.unwrap();
    let n: Option<i64> = root.query_first("SELECT COUNT(*) FROM d.t").await.unwrap();
    assert_eq!(n, Some(21));
}
