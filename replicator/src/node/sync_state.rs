//! The node's state as Galera names it (Joined while catching up after
//! (re)entering the primary component, Synced once caught up) and the
//! fraction of time flow control held proposals — from periodic samples
//! of the group and the pipeline.
//!
//! Pure: the caller samples and passes the facts in, with the time. Owns
//! nothing else and touches no I/O.

use std::time::{Duration, Instant};

/// What one sample saw.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub primary: bool,
    /// The log's commit index as this member knows it.
    pub commit_index: u64,
    /// The highest seqno the delivery loop has processed.
    pub processed: u64,
    /// Write-sets waiting to be applied here.
    pub recv_queue: u64,
    /// Whether flow control holds new proposals cluster-wide.
    pub flow_paused: bool,
}

/// Joined/Synced and flow-control time, updated by [`SyncState::observe`].
#[derive(Debug, Clone)]
pub struct SyncState {
    primary: bool,
    synced: bool,
    /// What must be processed before the node counts as caught up.
    target: u64,
    started: Instant,
    last: Instant,
    paused: Duration,
}

impl SyncState {
    /// A node that has caught up with the log before serving clients (what
    /// start-up does) is Synced as soon as it is primary.
    pub fn new(now: Instant) -> Self {
        Self {
            primary: false,
            synced: true,
            target: 0,
            started: now,
            last: now,
            paused: Duration::ZERO,
        }
    }

    pub fn observe(&mut self, now: Instant, sample: Sample) {
        if sample.flow_paused {
            self.paused += now.saturating_duration_since(self.last);
        }
        self.last = now;
        if sample.primary && !self.primary {
            // Back in the primary component: whatever the cluster
            // committed meanwhile must be applied first.
            self.target = sample.commit_index;
            self.synced = false;
        }
        self.primary = sample.primary;
        if self.primary && !self.synced && sample.processed >= self.target && sample.recv_queue == 0
        {
            self.synced = true;
        }
    }

    /// Galera's `wsrep_local_state` and its comment, given whether the
    /// node is primary right now (a change the samples have not seen yet
    /// counts as not caught up).
    pub fn local_state(&self, primary: bool) -> (u8, &'static str) {
        match (primary, self.primary && self.synced) {
            (true, true) => (4, "Synced"),
            (true, false) => (3, "Joined"),
            (false, _) => (0, "Initialized"),
        }
    }

    /// Fraction of the time since start that flow control held proposals
    /// (`wsrep_flow_control_paused`).
    pub fn flow_control_paused(&self) -> f64 {
        let total = self.last.saturating_duration_since(self.started);
        if total.is_zero() {
            0.0
        } else {
            self.paused.as_secs_f64() / total.as_secs_f64()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(primary: bool, commit_index: u64, processed: u64, recv_queue: u64) -> Sample {
        Sample {
            primary,
            commit_index,
            processed,
            recv_queue,
            flow_paused: false,
        }
    }

    #[test]
    fn a_node_back_in_the_primary_component_is_joined_until_caught_up() {
        let t = Instant::now();
        let mut s = SyncState::new(t);
        assert_eq!(s.local_state(s.primary), (0, "Initialized"));
        s.observe(t, sample(true, 10, 10, 0));
        assert_eq!(
            s.local_state(s.primary),
            (4, "Synced"),
            "caught up at start-up"
        );
        s.observe(t, sample(false, 10, 10, 0));
        assert_eq!(s.local_state(s.primary), (0, "Initialized"));
        // Back: the cluster committed up to 50 meanwhile.
        s.observe(t, sample(true, 50, 10, 0));
        assert_eq!(s.local_state(s.primary), (3, "Joined"));
        s.observe(t, sample(true, 60, 50, 3));
        assert_eq!(s.local_state(s.primary), (3, "Joined"), "still applying");
        s.observe(t, sample(true, 70, 55, 0));
        assert_eq!(s.local_state(s.primary), (4, "Synced"));
        // Load afterwards does not flip it back.
        s.observe(t, sample(true, 90, 70, 8));
        assert_eq!(s.local_state(s.primary), (4, "Synced"));
    }

    #[test]
    fn flow_control_time_is_a_fraction_of_the_total() {
        let t = Instant::now();
        let mut s = SyncState::new(t);
        assert_eq!(s.flow_control_paused(), 0.0);
        let mut paused = sample(true, 0, 0, 0);
        paused.flow_paused = true;
        s.observe(t + Duration::from_secs(1), sample(true, 0, 0, 0));
        s.observe(t + Duration::from_secs(4), paused);
        assert!((s.flow_control_paused() - 0.75).abs() < 1e-9);
    }
}
