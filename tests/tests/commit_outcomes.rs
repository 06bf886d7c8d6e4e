//! Commit outcomes when sessions stop waiting for the cluster: a commit
//! timeout far below the log's latency makes sessions give up (their
//! clients lose the connection: outcome unknown) while the log goes on
//! deciding. Whatever the timing, every acknowledged commit is present,
//! every cleanly refused one absent, nothing stays prepared, and later
//! commits are never blocked behind a transaction nobody resolves.

use std::collections::HashSet;
use std::time::Duration;

use e2e::TestServer;
use e2e::sidecar::{Sidecar, prepare_server};
use mysql_async::prelude::*;

/// What a client saw for one insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// An error from the server or replicator: nothing committed.
    Refused,
    /// The connection was lost: committed or not.
    Unknown,
}

async fn insert(c: &mut mysql_async::Conn, id: i64) -> Outcome {
    match c
        .query_drop(format!("INSERT INTO g VALUES ({id}, 0)"))
        .await
    {
        Ok(()) => Outcome::Ok,
        Err(mysql_async::Error::Server(_)) => Outcome::Refused,
        Err(_) => Outcome::Unknown,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_give_up_waiting_never_leave_a_commit_unresolved() {
    let server = TestServer::start().await.unwrap();
    prepare_server(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::bootstrap(
        &server,
        &dir.path().join("replicator"),
        &["--commit-timeout-ms", "1"],
    )
    .await;
    // Created directly: through the replicator, DDL waits for the log
    // like any commit, and may give up too.
    let mut root = server.root_conn().await.unwrap();
    root.query_drop("CREATE TABLE d.g (id BIGINT PRIMARY KEY, v INT)")
        .await
        .unwrap();

    let writers: Vec<_> = (0..16i64)
        .map(|w| {
            let opts = sidecar.opts();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut conn = None;
                for i in 0..40 {
                    let id = w * 1000 + i;
                    if conn.is_none() {
                        conn = mysql_async::Conn::new(opts.clone()).await.ok();
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let outcome = insert(c, id).await;
                    if outcome == Outcome::Unknown {
                        conn = None;
                    }
                    seen.push((id, outcome));
                }
                seen
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for w in writers {
        outcomes.extend(w.await.unwrap());
    }
    let count = |o: Outcome| outcomes.iter().filter(|(_, x)| *x == o).count();
    eprintln!(
        "ok {} refused {} unknown {}",
        count(Outcome::Ok),
        count(Outcome::Refused),
        count(Outcome::Unknown)
    );
    assert!(
        count(Outcome::Unknown) > 0,
        "the test must make sessions give up waiting (lower the timeout)"
    );

    // Every transaction the log decided gets resolved, by its session or
    // by the pipeline: XA RECOVER drains.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows: Vec<(i64, i64, i64, Vec<u8>)> = root.query("XA RECOVER").await.unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "transactions left prepared: {:?}\n{}",
            rows.iter()
                .map(|r| String::from_utf8_lossy(&r.3).into_owned())
                .collect::<Vec<_>>(),
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sidecar.wait_exit(Duration::ZERO).await.is_none(),
        "the node stopped:\n{}",
        sidecar.log()
    );

    let present: Vec<i64> = root.query("SELECT id FROM d.g").await.unwrap();
    let present: HashSet<i64> = present.into_iter().collect();
    for (id, outcome) in &outcomes {
        match outcome {
            Outcome::Ok => assert!(present.contains(id), "acknowledged {id} lost"),
            Outcome::Refused => assert!(!present.contains(id), "refused {id} committed"),
            Outcome::Unknown => {}
        }
    }

    // Later commits are not blocked: with a generous client timeout, one
    // of a few attempts commits (each may still give up on its own).
    let mut c = sidecar.conn().await;
    let mut committed = false;
    for i in 0..50 {
        let attempt = tokio::time::timeout(Duration::from_secs(10), insert(&mut c, -1 - i)).await;
        match attempt {
            Err(_) => panic!(
                "a commit hung: the commit order is stuck\n{}",
                sidecar.log()
            ),
            Ok(Outcome::Ok) => {
                committed = true;
                break;
            }
            Ok(Outcome::Unknown) => c = sidecar.conn().await,
            Ok(Outcome::Refused) => {}
        }
    }
    assert!(committed, "no commit succeeded after the load");
    sidecar.kill().await;
}
