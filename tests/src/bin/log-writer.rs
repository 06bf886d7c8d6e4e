//! Crash-test helper: appends to a `group` log store as fast as it can and
//! prints `synced <last index>` after each durable sync. The crash test
//! kills it with SIGKILL and checks that every printed index survived.
//!
//! Usage: `log-writer DIR` (continues after the last entry already there).

use std::io::Write;

use e2e::log_payload as payload;
use group::log_store::{LogStore, LogStoreOptions};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: log-writer DIR"))?;
    let (mut store, _) = LogStore::open(
        &dir,
        LogStoreOptions {
            segment_bytes: 256 << 10,
        },
    )?;
    let mut next = store.last_index().map_or(1, |i| i + 1);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready {}", next - 1)?;
    out.flush()?;
    loop {
        let batch = 1 + (next % 17);
        let entries: Vec<(u64, Vec<u8>)> = (next..next + batch).map(|i| (i, payload(i))).collect();
        store.append(entries.iter().map(|(i, p)| (*i, p.as_slice())))?;
        store.sync()?;
        next += batch;
        writeln!(out, "synced {}", next - 1)?;
        out.flush()?;
    }
}
