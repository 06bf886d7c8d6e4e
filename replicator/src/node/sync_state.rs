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
    /// What must be processed before the node counts as caught up: the
    /// cluster's commit index when the node came back (a read index from
    /// the leader; its own view of the commit index may lag), once known.
    target: Option<u64>,
    started: Instant,
    last: Instant,
    paused: Duration,
}

impl SyncState {
    /// A node that has not been primary yet.
    pub fn new(now: Instant) -> Self {
        Self {
            primary: false,
            synced: false,
            target: None,
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
            // In the primary component (again): whatever the cluster
            // committed must be applied first.
            self.target = None;
            self.synced = false;
        }
        self.primary = sample.primary;
        if self.primary
            && !self.synced
            && self.target.is_some_and(|t| sample.processed >= t)
            && sample.recv_queue == 0
        {
            self.synced = true;
        }
    }

    /// Whether the caller must find the cluster's commit index and pass it
    /// to [`SyncState::set_target`].
    pub fn needs_target(&self) -> bool {
        self.primary && !self.synced && self.target.is_none()
    }

    /// The cluster's commit index, read after the node came back.
    pub fn set_target(&mut self, commit_index: u64) {
        self.target = Some(commit_index);
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

    fn sample(primary: bool, processed: u64, recv_queue: u64) -> Sample {
        Sample {
            primary,
            processed,
            recv_queue,
            flow_paused: false,
        }
    }

    #[test]
    fn a_node_in_the_primary_component_is_joined_until_caught_up() {
        let t = Instant::now();
        let mut s = SyncState::new(t);
        assert_eq!(s.local_state(false), (0, "Initialized"));
        s.observe(t, sample(true, 10, 0));
        assert!(s.needs_target());
        assert_eq!(
            s.local_state(true),
            (3, "Joined"),
            "the cluster's position is not known yet"
        );
        s.set_target(10);
        s.observe(t, sample(true, 10, 0));
        assert!(!s.needs_target());
        assert_eq!(s.local_state(true), (4, "Synced"));
        assert_eq!(
            s.local_state(false),
            (0, "Initialized"),
            "the live view wins"
        );
        s.observe(t, sample(false, 10, 0));
        assert_eq!(s.local_state(false), (0, "Initialized"));
        // Back: the cluster committed up to 50 meanwhile.
        s.observe(t, sample(true, 10, 0));
        assert_eq!(s.local_state(true), (3, "Joined"));
        s.set_target(50);
        s.observe(t, sample(true, 50, 3));
        assert_eq!(s.local_state(true), (3, "Joined"), "still applying");
        s.observe(t, sample(true, 55, 0));
        assert_eq!(s.local_state(true), (4, "Synced"));
        // Load afterwards does not flip it back.
        s.observe(t, sample(true, 70, 8));
        assert_eq!(s.local_state(true), (4, "Synced"));
        // A primary change the samples have not seen counts as not synced.
        s.observe(t, sample(false, 70, 0));
        assert_eq!(s.local_state(true), (3, "Joined"));
    }

    #[test]
    fn flow_control_time_is_a_fraction_of_the_total() {
        let t = Instant::now();
        let mut s = SyncState::new(t);
        assert_eq!(s.flow_control_paused(), 0.0);
        let mut paused = sample(true, 0, 0);
        paused.flow_paused = true;
        s.observe(t + Duration::from_secs(1), sample(true, 0, 0));
        s.observe(t + Duration::from_secs(4), paused);
        assert!((s.flow_control_paused() - 0.75).abs() < 1e-9);
    }
}
