//! The certification index and the [`Certifier`] that owns it.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hasher};

use hashbrown::HashMap;

use super::{CertError, CertRequest, Failure, Fingerprint, KeyKind, Mode, Seqno, Verdict};

/// Who last held a key, per kind. `0` means "nobody inside the window"
/// (seqnos start at 1).
#[derive(Debug, Clone, Copy, Default)]
struct Holders {
    last_exclusive: Seqno,
    last_shared: Seqno,
}

impl Holders {
    fn latest(&self) -> Seqno {
        self.last_exclusive.max(self.last_shared)
    }

    /// The latest holder that conflicts with holding the key as `kind`.
    fn conflicting(&self, kind: KeyKind) -> Seqno {
        match kind {
            KeyKind::Exclusive => self.latest(),
            KeyKind::Shared => self.last_exclusive,
        }
    }
}

/// Fingerprints are already uniformly distributed (xxh3-128), so the index
/// hashes them by taking their low 64 bits instead of hashing them again.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u128 keys, which the index never uses; fold
        // the bytes anyway so the hasher stays correct if that changes.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

type FingerprintMap<V> = HashMap<Fingerprint, V, BuildHasherDefault<FingerprintHasher>>;

/// Certifies an ordered stream of write-sets. See the module documentation
/// for the contract.
#[derive(Debug)]
pub struct Certifier {
    /// How many seqnos back a write-set's snapshot may reach.
    window: u64,
    index: FingerprintMap<Holders>,
    /// Passing write-sets still in the index, oldest first: (seqno, number of
    /// their fingerprints in `window_keys`).
    window_sets: VecDeque<(Seqno, usize)>,
    /// The fingerprints of `window_sets`, concatenated in the same order.
    window_keys: VecDeque<Fingerprint>,
    /// The last seqno certified.
    last_seqno: Seqno,
    /// The last TOI seqno: everything after waits for it.
    last_toi: Seqno,
    /// Every index entry at or below this seqno has been purged.
    purged_through: Seqno,
}

impl Certifier {
    /// A certifier that keeps `window` seqnos of history. Every node of a
    /// cluster must use the same window (it is part of the cluster's
    /// configuration), or verdicts could differ.
    pub fn new(window: u64) -> Self {
        Self {
            window,
            index: FingerprintMap::default(),
            window_sets: VecDeque::new(),
            window_keys: VecDeque::new(),
            last_seqno: 0,
            last_toi: 0,
            purged_through: 0,
        }
    }

    /// A certifier for a node that resumes after `last_seqno` (restart or
    /// state transfer), rebuilt from the write-sets that *passed* in the last
    /// `window` seqnos, oldest first. Verdicts depend on exactly those, so
    /// the rebuilt certifier judges what follows as every other node does.
    /// The caller learns which write-sets passed from durable state (every
    /// commit is tied to its seqno), not by certifying them again: an index
    /// rebuilt by re-certifying from an arbitrary point could differ.
    ///
    /// `passed` entries after `last_seqno` are an error.
    pub fn restore<'a>(
        window: u64,
        last_seqno: Seqno,
        passed: impl IntoIterator<Item = CertRequest<'a>>,
    ) -> Result<Self, CertError> {
        let mut certifier = Self::new(window);
        certifier.purged_through = last_seqno.saturating_sub(window + 1);
        for req in passed {
            if req.seqno <= certifier.last_seqno || req.seqno > last_seqno {
                return Err(CertError::OutOfOrder {
                    last: certifier.last_seqno.max(last_seqno),
                    got: req.seqno,
                });
            }
            certifier.last_seqno = req.seqno;
            if req.seqno <= certifier.purged_through {
                continue;
            }
            if req.mode == Mode::TotalOrderIsolation {
                certifier.last_toi = req.seqno;
            }
            certifier.insert(&req);
        }
        certifier.last_seqno = last_seqno;
        Ok(certifier)
    }

    /// The configured window, in seqnos.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The last seqno certified (or the starting point).
    pub fn last_seqno(&self) -> Seqno {
        self.last_seqno
    }

    /// Number of distinct keys currently in the index.
    pub fn indexed_keys(&self) -> usize {
        self.index.len()
    }

    /// Certify one write-set. `Err` means the caller broke the ordering
    /// contract; the index is unchanged in that case.
    pub fn certify(&mut self, req: &CertRequest<'_>) -> Result<Verdict, CertError> {
        if req.seqno <= self.last_seqno {
            return Err(CertError::OutOfOrder {
                last: self.last_seqno,
                got: req.seqno,
            });
        }
        self.last_seqno = req.seqno;
        // The oldest snapshot this seqno may have is `seqno - 1 - window`;
        // entries at or below it can no longer matter.
        self.purge_through(req.seqno.saturating_sub(self.window + 1));

        let verdict = match req.mode {
            Mode::TotalOrderIsolation => {
                self.last_toi = req.seqno;
                Verdict::Pass {
                    apply_after: req.seqno - 1,
                }
            }
            Mode::Transaction => self.judge(req),
        };
        if let Verdict::Pass { .. } = verdict {
            self.insert(req);
        }
        Ok(verdict)
    }

    fn judge(&self, req: &CertRequest<'_>) -> Verdict {
        if req.depends_on >= req.seqno {
            return Verdict::Fail(Failure::DependsOnFuture {
                depends_on: req.depends_on,
            });
        }
        if req.depends_on < self.purged_through {
            return Verdict::Fail(Failure::TooOld {
                depends_on: req.depends_on,
                oldest_allowed: self.purged_through,
            });
        }
        let mut apply_after = self.last_toi.max(self.purged_through);
        let mut conflict: Seqno = 0;
        for key in req.keys {
            if let Some(holders) = self.index.get(&key.fingerprint) {
                let other = holders.conflicting(key.kind);
                apply_after = apply_after.max(other);
                if other > req.depends_on {
                    conflict = conflict.max(other);
                }
            }
        }
        if conflict > 0 {
            Verdict::Fail(Failure::Conflict { with: conflict })
        } else {
            Verdict::Pass { apply_after }
        }
    }

    fn insert(&mut self, req: &CertRequest<'_>) {
        for key in req.keys {
            let holders = self.index.entry(key.fingerprint).or_default();
            match key.kind {
                KeyKind::Exclusive => holders.last_exclusive = req.seqno,
                KeyKind::Shared => holders.last_shared = req.seqno,
            }
            self.window_keys.push_back(key.fingerprint);
        }
        self.window_sets.push_back((req.seqno, req.keys.len()));
    }

    /// Forget every write-set at or below `horizon`.
    fn purge_through(&mut self, horizon: Seqno) {
        if horizon <= self.purged_through {
            return;
        }
        self.purged_through = horizon;
        while let Some(&(seqno, count)) = self.window_sets.front() {
            if seqno > horizon {
                break;
            }
            self.window_sets.pop_front();
            for fingerprint in self.window_keys.drain(..count) {
                // A later holder keeps the entry alive.
                if let hashbrown::hash_map::EntryRef::Occupied(entry) =
                    self.index.entry_ref(&fingerprint)
                    && entry.get().latest() <= horizon
                {
                    entry.remove();
                }
            }
        }
    }
}
