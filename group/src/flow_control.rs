//! Flow control: a member whose apply queue grows too long asks the leader
//! to hold new proposals until it catches up (Galera's `gcs.fc_limit`).
//!
//! Owns the leader's table of pausing members ([`FlowGate`]). A pause is a
//! lease: the pausing member renews it every heartbeat, so a member that
//! dies while paused stops holding the cluster after the lease. Knows
//! nothing of what the queue holds; the consumer decides when to pause
//! (see [`crate::GroupMember::pause_proposals`]). Must not touch Raft.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The leader's view of which members hold proposals, and until when.
#[derive(Debug)]
pub(crate) struct FlowGate {
    lease: Duration,
    pauses: Mutex<BTreeMap<u64, Instant>>,
    resumed: Notify,
}

impl FlowGate {
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            pauses: Mutex::new(BTreeMap::new()),
            resumed: Notify::new(),
        }
    }

    /// `node` asks to hold proposals (renewed by asking again).
    pub fn pause(&self, node: u64) {
        let now = Instant::now();
        let newly = self
            .pauses
            .lock()
            .expect("flow lock")
            .insert(node, now + self.lease)
            .is_none_or(|until| until <= now);
        if newly {
            tracing::info!(node, "flow control: proposals paused");
        }
    }

    /// `node` caught up.
    pub fn resume(&self, node: u64) {
        let was = self.pauses.lock().expect("flow lock").remove(&node);
        if was.is_some() {
            tracing::info!(node, "flow control: member resumed");
        }
        self.resumed.notify_waiters();
    }

    /// Forget every pause (this member stopped leading: the next leader
    /// rebuilds the table from renewals).
    pub fn clear(&self) {
        self.pauses.lock().expect("flow lock").clear();
        self.resumed.notify_waiters();
    }

    /// Members holding proposals now, and when the earliest pause lapses.
    pub fn paused_by(&self) -> (Vec<u64>, Option<Instant>) {
        let now = Instant::now();
        let mut pauses = self.pauses.lock().expect("flow lock");
        pauses.retain(|_, until| *until > now);
        (
            pauses.keys().copied().collect(),
            pauses.values().min().copied(),
        )
    }

    /// Wait until no member holds proposals, or until `deadline`; the
    /// members still holding them at the deadline otherwise.
    pub async fn wait_open(&self, deadline: Instant) -> Result<(), Vec<u64>> {
        loop {
            let resumed = self.resumed.notified();
            let (paused, lapse) = self.paused_by();
            if paused.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(paused);
            }
            let wake = lapse.map_or(deadline, |l| l.min(deadline));
            tokio::select! {
                _ = resumed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_until_resumed() {
        let gate = std::sync::Arc::new(FlowGate::new(Duration::from_secs(2)));
        gate.pause(7);
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.wait_open(Instant::now() + Duration::from_secs(60))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiter.is_finished(), "held while paused");
        gate.resume(7);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_that_is_not_renewed_lapses() {
        let gate = FlowGate::new(Duration::from_secs(2));
        gate.pause(3);
        let start = Instant::now();
        assert_eq!(
            gate.wait_open(start + Duration::from_secs(60)).await,
            Ok(())
        );
        let waited = Instant::now() - start;
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert!(gate.paused_by().0.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_reports_who_holds_proposals() {
        let gate = FlowGate::new(Duration::from_secs(10));
        gate.pause(2);
        gate.pause(5);
        assert_eq!(
            gate.wait_open(Instant::now() + Duration::from_secs(1))
                .await,
            Err(vec![2, 5])
        );
        gate.resume(2);
        gate.clear();
        assert_eq!(gate.wait_open(Instant::now()).await, Ok(()));
    }
}
