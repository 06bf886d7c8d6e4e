//! Graceful stop of the proxy's sessions: the node tells every session how
//! far it is in stopping ([`StopPhase`]), and counts the sessions still
//! alive so it can wait for them to end.
//!
//! Owns only the phase and the count; what a session does in each phase is
//! in [`super::transaction`], when the node moves from one phase to the
//! next is in `node`.

use std::time::Duration;

use tokio::sync::watch;

/// How far the node is in stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopPhase {
    /// Serving normally.
    Running,
    /// Stopping: a session with no open transaction ends (a command it
    /// sends gets error 1053 first); a session inside a transaction may
    /// finish it.
    Draining,
    /// The grace period is over: a session waiting for its client's next
    /// command ends even inside a transaction (the server rolls it back
    /// when the connection closes). A command already running finishes.
    Closing,
}

/// The stop phase and the live-session count, shared by the node, the
/// accept loop and every session.
#[derive(Debug, Clone)]
pub struct Shutdown {
    phase: watch::Sender<StopPhase>,
    sessions: watch::Sender<usize>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            phase: watch::Sender::new(StopPhase::Running),
            sessions: watch::Sender::new(0),
        }
    }
}

impl Shutdown {
    /// Move to `phase` (never back).
    pub fn advance(&self, phase: StopPhase) {
        self.phase.send_if_modified(|p| {
            let later = phase > *p;
            if later {
                *p = phase;
            }
            later
        });
    }

    pub fn phase(&self) -> StopPhase {
        *self.phase.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<StopPhase> {
        self.phase.subscribe()
    }

    /// Count a session for as long as the guard lives.
    pub fn enter(&self) -> SessionGuard {
        self.sessions.send_modify(|n| *n += 1);
        SessionGuard(self.sessions.clone())
    }

    pub fn sessions(&self) -> usize {
        *self.sessions.borrow()
    }

    /// Wait until no session is left, at most `timeout`; how many are left.
    pub async fn wait_sessions_ended(&self, timeout: Duration) -> usize {
        let mut count = self.sessions.subscribe();
        let _ = tokio::time::timeout(timeout, count.wait_for(|n| *n == 0)).await;
        self.sessions()
    }
}

/// One live session; dropping it ends the count.
#[derive(Debug)]
pub struct SessionGuard(watch::Sender<usize>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Whether a session waiting for its client's next command must end now:
/// `in_transaction` sessions may finish while the node drains.
pub fn idle_session_must_end(phase: StopPhase, in_transaction: bool) -> bool {
    match phase {
        StopPhase::Running => false,
        StopPhase::Draining => !in_transaction,
        StopPhase::Closing => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_advance() {
        let s = Shutdown::default();
        s.advance(StopPhase::Closing);
        s.advance(StopPhase::Draining);
        assert_eq!(s.phase(), StopPhase::Closing);
    }

    #[test]
    fn idle_sessions_end_by_phase() {
        assert!(!idle_session_must_end(StopPhase::Running, false));
        assert!(idle_session_must_end(StopPhase::Draining, false));
        assert!(!idle_session_must_end(StopPhase::Draining, true));
        assert!(idle_session_must_end(StopPhase::Closing, true));
    }

    #[tokio::test]
    async fn waiting_for_sessions_ends_when_the_last_guard_drops() {
        let s = Shutdown::default();
        let a = s.enter();
        let b = s.enter();
        assert_eq!(s.wait_sessions_ended(Duration::from_millis(10)).await, 2);
        drop(a);
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.wait_sessions_ended(Duration::from_secs(10)).await })
        };
        drop(b);
        assert_eq!(waiter.await.unwrap(), 0);
    }
}
