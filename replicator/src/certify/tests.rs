//! Unit and property tests of the certifier. Scenario files are run by
//! `scenario.rs`; here are the rules one by one, the comparison with the
//! brute-force reference model, and restore-after-restart.

use proptest::prelude::*;

use super::reference::ReferenceCertifier;
use super::*;

fn x(fp: u128) -> CertKey {
    CertKey {
        fingerprint: fp,
        kind: KeyKind::Exclusive,
    }
}

fn s(fp: u128) -> CertKey {
    CertKey {
        fingerprint: fp,
        kind: KeyKind::Shared,
    }
}

fn trx(c: &mut Certifier, seqno: Seqno, depends_on: Seqno, keys: &[CertKey]) -> Verdict {
    c.certify(&CertRequest {
        seqno,
        depends_on,
        mode: Mode::Transaction,
        keys,
    })
    .unwrap()
}

#[test]
fn exclusive_conflicts_with_exclusive_inside_the_snapshot_gap() {
    let mut c = Certifier::new(100);
    assert_eq!(trx(&mut c, 1, 0, &[x(1)]), Verdict::Pass { apply_after: 0 });
    assert_eq!(
        trx(&mut c, 2, 0, &[x(1)]),
        Verdict::Fail(Failure::Conflict { with: 1 })
    );
    assert_eq!(trx(&mut c, 3, 1, &[x(1)]), Verdict::Pass { apply_after: 1 });
}

#[test]
fn shared_only_conflicts_with_exclusive() {
    let mut c = Certifier::new(100);
    assert!(matches!(trx(&mut c, 1, 0, &[s(1)]), Verdict::Pass { .. }));
    assert!(matches!(trx(&mut c, 2, 0, &[s(1)]), Verdict::Pass { .. }));
    assert_eq!(
        trx(&mut c, 3, 0, &[x(1)]),
        Verdict::Fail(Failure::Conflict { with: 2 })
    );
    assert!(matches!(trx(&mut c, 4, 2, &[x(1)]), Verdict::Pass { .. }));
    assert_eq!(
        trx(&mut c, 5, 3, &[s(1)]),
        Verdict::Fail(Failure::Conflict { with: 4 })
    );
}

#[test]
fn failed_write_sets_do_not_enter_the_index() {
    let mut c = Certifier::new(100);
    trx(&mut c, 1, 0, &[x(1)]);
    assert!(matches!(trx(&mut c, 2, 0, &[x(1), x(2)]), Verdict::Fail(_)));
    // Key 2 was only held by the failed write-set.
    assert_eq!(trx(&mut c, 3, 0, &[x(2)]), Verdict::Pass { apply_after: 0 });
}

#[test]
fn toi_always_passes_and_orders_everything_after_it() {
    let mut c = Certifier::new(100);
    trx(&mut c, 1, 0, &[x(1)]);
    let toi = c
        .certify(&CertRequest {
            seqno: 2,
            depends_on: 0,
            mode: Mode::TotalOrderIsolation,
            keys: &[x(1)],
        })
        .unwrap();
    assert_eq!(toi, Verdict::Pass { apply_after: 1 });
    assert_eq!(trx(&mut c, 3, 2, &[x(9)]), Verdict::Pass { apply_after: 2 });
    assert_eq!(
        trx(&mut c, 4, 1, &[x(1)]),
        Verdict::Fail(Failure::Conflict { with: 2 })
    );
}

#[test]
fn out_of_order_input_is_an_error_and_changes_nothing() {
    let mut c = Certifier::new(100);
    trx(&mut c, 5, 0, &[x(1)]);
    for bad in [5, 4, 0] {
        let err = c
            .certify(&CertRequest {
                seqno: bad,
                depends_on: 0,
                mode: Mode::Transaction,
                keys: &[x(2)],
            })
            .unwrap_err();
        assert_eq!(err, CertError::OutOfOrder { last: 5, got: bad });
    }
    assert_eq!(c.last_seqno(), 5);
    // Key 2 did not enter the index.
    assert_eq!(trx(&mut c, 6, 0, &[x(2)]), Verdict::Pass { apply_after: 0 });
}

#[test]
fn depends_on_at_or_after_own_seqno_fails() {
    let mut c = Certifier::new(100);
    assert_eq!(
        trx(&mut c, 3, 3, &[x(1)]),
        Verdict::Fail(Failure::DependsOnFuture { depends_on: 3 })
    );
}

#[test]
fn purge_bounds_the_index() {
    let window = 1000;
    let mut c = Certifier::new(window);
    for seqno in 1..=100_000u64 {
        let keys = [x(u128::from(seqno)), x(u128::from(seqno) + (1 << 64))];
        assert!(matches!(
            trx(&mut c, seqno, seqno - 1, &keys),
            Verdict::Pass { .. }
        ));
    }
    // Two keys per write-set, at most `window + 1` write-sets retained,
    // plus nothing else.
    assert!(
        c.indexed_keys() <= 2 * (window as usize + 1),
        "{}",
        c.indexed_keys()
    );
    assert_eq!(
        trx(&mut c, 100_001, 100_000 - window - 1, &[x(7)]),
        Verdict::Fail(Failure::TooOld {
            depends_on: 100_000 - window - 1,
            oldest_allowed: 100_000 - window
        })
    );
}

/// One generated write-set: (gap to previous seqno, snapshot lag, TOI?, keys).
type Step = (u64, u64, bool, Vec<(u8, bool)>);

fn history() -> impl Strategy<Value = (u64, Vec<Step>)> {
    let step = (
        prop_oneof![4 => Just(1u64), 1 => 2u64..5],
        prop_oneof![3 => 0u64..4, 1 => 0u64..30, 1 => Just(u64::MAX)],
        prop::bool::weighted(0.05),
        proptest::collection::vec((0u8..12, any::<bool>()), 0..5),
    );
    (1u64..12, proptest::collection::vec(step, 1..120))
}

fn keys_of(raw: &[(u8, bool)]) -> Vec<CertKey> {
    raw.iter()
        .map(|(k, excl)| {
            if *excl {
                x(u128::from(*k))
            } else {
                s(u128::from(*k))
            }
        })
        .collect()
}

/// Turn a step into a request: `lag == u64::MAX` makes a future snapshot.
fn request_parts(seqno: Seqno, lag: u64, toi: bool) -> (Seqno, Mode) {
    let depends_on = if lag == u64::MAX {
        seqno + 1
    } else {
        seqno.saturating_sub(1 + lag)
    };
    let mode = if toi {
        Mode::TotalOrderIsolation
    } else {
        Mode::Transaction
    };
    (depends_on, mode)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The index (with purge) decides exactly as the brute-force model.
    #[test]
    fn certifier_matches_reference_model((window, steps) in history()) {
        let mut certifier = Certifier::new(window);
        let mut model = ReferenceCertifier::new(window);
        let mut seqno = 0;
        for (gap, lag, toi, raw) in steps {
            seqno += gap;
            let keys = keys_of(&raw);
            let (depends_on, mode) = request_parts(seqno, lag, toi);
            let got = certifier
                .certify(&CertRequest { seqno, depends_on, mode, keys: &keys })
                .unwrap();
            let want = model.certify(seqno, depends_on, mode, &keys);
            prop_assert_eq!(got, want, "seqno {} depends_on {} keys {:?}", seqno, depends_on, keys);
        }
    }

    /// A certifier restored from the write-sets that passed in the window
    /// judges the rest of the history exactly as one that ran throughout.
    #[test]
    fn restored_certifier_continues_identically(
        (window, steps) in history(),
        split_at in 0usize..120,
    ) {
        let split_at = split_at.min(steps.len());
        let mut full = Certifier::new(window);
        let mut passed: Vec<(Seqno, Seqno, Mode, Vec<CertKey>)> = Vec::new();
        let mut seqno = 0;
        let mut requests = Vec::new();
        for (gap, lag, toi, raw) in &steps {
            seqno += gap;
            let (depends_on, mode) = request_parts(seqno, *lag, *toi);
            requests.push((seqno, depends_on, mode, keys_of(raw)));
        }
        for (seqno, depends_on, mode, keys) in &requests[..split_at] {
            let verdict = full
                .certify(&CertRequest { seqno: *seqno, depends_on: *depends_on, mode: *mode, keys })
                .unwrap();
            if let Verdict::Pass { .. } = verdict {
                passed.push((*seqno, *depends_on, *mode, keys.clone()));
            }
        }
        let last = requests[..split_at].last().map_or(0, |r| r.0);
        let mut restored = Certifier::restore(
            window,
            last,
            passed.iter().map(|(seqno, depends_on, mode, keys)| CertRequest {
                seqno: *seqno,
                depends_on: *depends_on,
                mode: *mode,
                keys,
            }),
        )
        .unwrap();
        for (seqno, depends_on, mode, keys) in &requests[split_at..] {
            let req = CertRequest { seqno: *seqno, depends_on: *depends_on, mode: *mode, keys };
            prop_assert_eq!(restored.certify(&req).unwrap(), full.certify(&req).unwrap());
        }
    }
}
