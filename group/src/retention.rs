//! The retention window: which committed entries the log may forget.
//!
//! Owns the periodic purge decision. Entries stay while they are inside the
//! window (the newest `retention_entries` applied entries, at most
//! `retention_bytes` of segments, and — if `retention_age_s` is set — no
//! segment last written longer ago than that); a member that falls behind the window is
//! sent a snapshot, which for this log is only a position: "take a full
//! state transfer up to seqno N" (see [`crate::Committed::SnapshotInstalled`]).
//! Only whole segments are deleted (by the storage); this module never
//! touches files itself.

use std::sync::Weak;

use openraft::async_runtime::WatchReceiver;

use crate::member::Inner;
use crate::storage::RaftLog;

/// The highest index the window lets go of: everything at or below it is
/// outside the window. `by_log` is the point the log's own limits (bytes,
/// age) ask for. `applied` bounds it (nothing unapplied is purged).
pub(crate) fn purge_point(
    applied: u64,
    retention_entries: u64,
    by_log: Option<u64>,
) -> Option<u64> {
    let by_entries = applied.checked_sub(retention_entries).filter(|i| *i > 0);
    let point = by_entries.max(by_log)?;
    Some(point.min(applied))
}

/// Every `purge_interval`, take a snapshot (position) and purge what left
/// the window.
pub(crate) async fn enforce(inner: Weak<Inner>, log: RaftLog) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let interval = strong.config.purge_interval();
        let m = strong.raft.metrics().borrow_watched().clone();
        let applied = m.last_applied.map_or(0, |l| l.index);
        let by_bytes = log.purge_point_for_bytes(strong.config.retention_bytes);
        let by_age = (strong.config.retention_age_s > 0)
            .then(|| {
                log.purge_point_for_age(std::time::Duration::from_secs(
                    strong.config.retention_age_s,
                ))
            })
            .flatten();
        let by_log = by_bytes.max(by_age);
        let purged = m.purged.map_or(0, |l| l.index);
        if let Some(point) = purge_point(applied, strong.config.retention_entries, by_log)
            && point > purged
        {
            if m.snapshot.map_or(0, |l| l.index) < point {
                // The snapshot is a position only; it costs nothing to take.
                let _ = strong.raft.trigger().snapshot().await;
            }
            tracing::info!(
                node = strong.credentials.node_id,
                through = point,
                applied,
                "retention: purging entries outside the window"
            );
            // openraft purges only what a snapshot covers and what no
            // replication stream is still reading; it retries later.
            let _ = strong.raft.trigger().purge_log(point).await;
        }
        drop(strong);
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_newest_entries() {
        assert_eq!(purge_point(50, 100, None), None);
        assert_eq!(purge_point(100, 100, None), None);
        assert_eq!(purge_point(150, 100, None), Some(50));
    }

    #[test]
    fn the_tighter_limit_wins_but_nothing_unapplied_goes() {
        assert_eq!(purge_point(150, 100, Some(120)), Some(120));
        assert_eq!(purge_point(150, 100, Some(10)), Some(50));
        assert_eq!(purge_point(150, 100, Some(400)), Some(150));
        assert_eq!(purge_point(20, 100, Some(7)), Some(7));
    }
}
