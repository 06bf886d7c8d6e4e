//! Which transactions the log has already decided, by (origin, xid): the
//! first write-set or abandon marker for a transaction decides it, and any
//! later copy (a proposal retried after a lost reply, or a write-set after
//! its origin abandoned it) is ignored — the same decision on every node,
//! because every node reads the same log. Pure; forgets decisions older
//! than a fixed window of seqnos, identically everywhere.

use std::collections::{HashMap, VecDeque};

/// How the log first decided a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSeen {
    /// Its write-set came first, at this seqno.
    WriteSet(u64),
    /// Its origin abandoned it first, at this seqno.
    Abandoned(u64),
}

/// Decided transactions within the window.
#[derive(Debug)]
pub struct Seen {
    window: u64,
    by_id: HashMap<(u64, Vec<u8>), FirstSeen>,
    by_seqno: VecDeque<(u64, (u64, Vec<u8>))>,
}

impl Seen {
    pub fn new(window: u64) -> Self {
        Self {
            window,
            by_id: HashMap::new(),
            by_seqno: VecDeque::new(),
        }
    }

    /// Record what the log says at `seqno` about (origin, xid); returns how
    /// the transaction was first decided (this entry, or an earlier one).
    pub fn record(&mut self, origin: u64, xid: &[u8], seqno: u64, abandon: bool) -> FirstSeen {
        while let Some((s, _)) = self.by_seqno.front() {
            if s + self.window >= seqno {
                break;
            }
            if let Some((_, id)) = self.by_seqno.pop_front() {
                self.by_id.remove(&id);
            }
        }
        let id = (origin, xid.to_vec());
        if let Some(first) = self.by_id.get(&id) {
            return *first;
        }
        let first = if abandon {
            FirstSeen::Abandoned(seqno)
        } else {
            FirstSeen::WriteSet(seqno)
        };
        self.by_id.insert(id.clone(), first);
        self.by_seqno.push_back((seqno, id));
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_entry_decides() {
        let mut seen = Seen::new(100);
        assert_eq!(seen.record(1, b"x", 5, false), FirstSeen::WriteSet(5));
        assert_eq!(seen.record(1, b"x", 6, false), FirstSeen::WriteSet(5));
        assert_eq!(seen.record(1, b"x", 7, true), FirstSeen::WriteSet(5));
        assert_eq!(seen.record(2, b"x", 8, true), FirstSeen::Abandoned(8));
        assert_eq!(seen.record(2, b"x", 9, false), FirstSeen::Abandoned(8));
    }

    #[test]
    fn decisions_older_than_the_window_are_forgotten() {
        let mut seen = Seen::new(10);
        seen.record(1, b"x", 5, false);
        assert_eq!(seen.record(1, b"x", 15, false), FirstSeen::WriteSet(5));
        assert_eq!(seen.record(1, b"x", 16, false), FirstSeen::WriteSet(16));
    }
}
