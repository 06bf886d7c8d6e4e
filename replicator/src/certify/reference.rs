//! A brute-force model of the certification rule, written straight from
//! DESIGN.md with no index and no purge bookkeeping, for property tests.

use super::{CertKey, Failure, KeyKind, Mode, Seqno, Verdict};

pub struct ReferenceCertifier {
    window: u64,
    passed: Vec<(Seqno, Vec<CertKey>)>,
    last_toi: Seqno,
}

fn overlap(a: &[CertKey], b: &[CertKey]) -> bool {
    a.iter().any(|x| {
        b.iter().any(|y| {
            x.fingerprint == y.fingerprint
                && (x.kind == KeyKind::Exclusive || y.kind == KeyKind::Exclusive)
        })
    })
}

impl ReferenceCertifier {
    pub fn new(window: u64) -> Self {
        Self {
            window,
            passed: Vec::new(),
            last_toi: 0,
        }
    }

    pub fn certify(
        &mut self,
        seqno: Seqno,
        depends_on: Seqno,
        mode: Mode,
        keys: &[CertKey],
    ) -> Verdict {
        let oldest_allowed = seqno.saturating_sub(self.window + 1);
        let verdict = if mode == Mode::TotalOrderIsolation {
            self.last_toi = seqno;
            Verdict::Pass {
                apply_after: seqno - 1,
            }
        } else if depends_on >= seqno {
            Verdict::Fail(Failure::DependsOnFuture { depends_on })
        } else if depends_on < oldest_allowed {
            Verdict::Fail(Failure::TooOld {
                depends_on,
                oldest_allowed,
            })
        } else {
            let overlapping = || {
                self.passed
                    .iter()
                    .filter(|(_, other)| overlap(keys, other))
                    .map(|(s, _)| *s)
            };
            match overlapping().filter(|s| *s > depends_on).max() {
                Some(with) => Verdict::Fail(Failure::Conflict { with }),
                None => Verdict::Pass {
                    apply_after: overlapping()
                        .chain([oldest_allowed, self.last_toi])
                        .max()
                        .unwrap_or(0),
                },
            }
        };
        if let Verdict::Pass { .. } = verdict {
            self.passed.push((seqno, keys.to_vec()));
        }
        verdict
    }
}
