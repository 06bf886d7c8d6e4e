//! kill -9 during appends to the log store: every entry acknowledged as
//! synced before the kill is present and intact after recovery, and the
//! writer continues where the log ends. Repeated, on the same directory.

use std::time::Duration;

use e2e::log_payload as payload;
use group::log_store::{LogStore, LogStoreOptions};
use rand::Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked_total = 0;
    let mut torn_seen = 0;
    for round in 0..12 {
        let mut child = Command::new(e2e::binary("log-writer"))
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = rng.random_range(1..400);
        let mut acked = 0u64;
        let mut syncs = 0;
        while syncs < kill_after {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("writer makes progress")
                .unwrap()
                .expect("writer still running");
            if let Some(n) = line.strip_prefix("synced ") {
                acked = n.parse().unwrap();
                syncs += 1;
            } else if let Some(n) = line.strip_prefix("ready ") {
                // The writer continues after what survived the last crash.
                assert!(
                    n.parse::<u64>().unwrap() >= acked_total,
                    "round {round}: log went backwards"
                );
            }
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();

        let (store, report) = LogStore::open(
            dir.path(),
            LogStoreOptions {
                segment_bytes: 256 << 10,
            },
        )
        .expect("log recovers after kill -9");
        if report.torn_bytes > 0 {
            torn_seen += 1;
        }
        let last = store.last_index().expect("entries exist");
        assert!(
            last >= acked,
            "round {round}: acknowledged {acked} but log ends at {last}"
        );
        for (index, bytes) in store.read_range(1..=last).unwrap() {
            assert_eq!(bytes, payload(index), "entry {index} intact");
        }
        assert_eq!(store.first_index(), Some(1));
        acked_total = acked;
    }
    eprintln!("12 kills, {torn_seen} with a torn tail cut off, {acked_total} entries acknowledged");
    assert!(acked_total > 0);
}
