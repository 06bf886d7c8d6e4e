//! The commit order of this node: every seqno delivered by the log commits
//! (or is rolled back) in seqno order, and "last committed" is the highest
//! seqno below which nothing is left unfinished. Pure bookkeeping, no I/O
//! and no waiting (see [`super::monitor`] for that).

use std::collections::VecDeque;

/// Delivered seqnos and which of them are finished.
#[derive(Debug, Clone)]
pub struct CommitOrder {
    /// Delivered and not yet part of `last_committed`, in order.
    pending: VecDeque<(u64, bool)>,
    last_delivered: u64,
    last_committed: u64,
}

/// A misuse of the order (a bug, never a client's doing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("seqno {seqno} delivered after {last}")]
    OutOfOrder { seqno: u64, last: u64 },
    #[error("seqno {0} was never delivered or is already finished")]
    Unknown(u64),
}

impl CommitOrder {
    /// Everything up to `start` is committed already.
    pub fn new(start: u64) -> Self {
        Self {
            pending: VecDeque::new(),
            last_delivered: start,
            last_committed: start,
        }
    }

    pub fn last_committed(&self) -> u64 {
        self.last_committed
    }

    pub fn last_delivered(&self) -> u64 {
        self.last_delivered
    }

    /// `seqno` arrived from the log; it finishes later.
    pub fn delivered(&mut self, seqno: u64) -> Result<(), OrderError> {
        if seqno <= self.last_delivered {
            return Err(OrderError::OutOfOrder {
                seqno,
                last: self.last_delivered,
            });
        }
        self.last_delivered = seqno;
        self.pending.push_back((seqno, false));
        Ok(())
    }

    /// Whether `seqno` may commit now: everything before it is finished.
    pub fn is_turn(&self, seqno: u64) -> bool {
        self.pending.front().is_some_and(|(s, _)| *s == seqno)
    }

    /// Whether every delivered seqno up to `seqno` has finished (seqnos
    /// the log used for something else never hold anything up).
    pub fn is_done_through(&self, seqno: u64) -> bool {
        self.pending
            .iter()
            .take_while(|(s, _)| *s <= seqno)
            .all(|(_, done)| *done)
    }

    /// `seqno` committed or was rolled back. Returns the new
    /// `last_committed` when it moved.
    pub fn finish(&mut self, seqno: u64) -> Result<Option<u64>, OrderError> {
        let slot = self
            .pending
            .iter_mut()
            .find(|(s, done)| *s == seqno && !*done)
            .ok_or(OrderError::Unknown(seqno))?;
        slot.1 = true;
        let before = self.last_committed;
        while let Some(&(s, true)) = self.pending.front() {
            self.last_committed = s;
            self.pending.pop_front();
        }
        Ok((self.last_committed != before).then_some(self.last_committed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_count_only_once_everything_before_is_done() {
        let mut o = CommitOrder::new(10);
        o.delivered(12).unwrap();
        o.delivered(15).unwrap();
        o.delivered(16).unwrap();
        assert!(o.is_turn(12));
        assert!(!o.is_turn(15));
        assert_eq!(o.finish(15).unwrap(), None, "12 is still open");
        assert_eq!(o.last_committed(), 10);
        assert_eq!(o.finish(12).unwrap(), Some(15));
        assert!(o.is_done_through(14), "13 and 14 were never delivered");
        assert!(o.is_done_through(15));
        assert!(!o.is_done_through(16));
        assert!(o.is_turn(16));
        assert_eq!(o.finish(16).unwrap(), Some(16));
        assert_eq!(o.finish(16), Err(OrderError::Unknown(16)));
        assert_eq!(
            o.delivered(16),
            Err(OrderError::OutOfOrder {
                seqno: 16,
                last: 16
            })
        );
    }

    proptest! {
        /// Whatever order seqnos finish in, last_committed is the largest
        /// seqno with everything delivered before it finished.
        #[test]
        fn last_committed_is_the_finished_prefix(
            gaps in proptest::collection::vec(1u64..4, 1..30),
            seed in any::<u64>(),
        ) {
            let mut seqnos = Vec::new();
            let mut s = 0;
            for g in gaps { s += g; seqnos.push(s); }
            let mut o = CommitOrder::new(0);
            for s in &seqnos { o.delivered(*s).unwrap(); }
            let mut finish = seqnos.clone();
            // A deterministic shuffle from the seed.
            let mut x = seed | 1;
            for i in (1..finish.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                finish.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut done = std::collections::BTreeSet::new();
            for f in finish {
                o.finish(f).unwrap();
                done.insert(f);
                let expected = seqnos.iter().take_while(|s| done.contains(s)).last().copied().unwrap_or(0);
                prop_assert_eq!(o.last_committed(), expected);
            }
        }
    }
}
