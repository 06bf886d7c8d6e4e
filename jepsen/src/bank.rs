//! The bank workload's checker.
//!
//! Owns the JSON shapes of bank operations and the rule that money is
//! neither created nor destroyed: every successful read of all balances sums
//! to the constant total, and (unless the test allows it) no balance is
//! negative. Each bad read is reported on its own. Pure logic over a history
//! in memory.
//!
//! Must not touch: databases, files, or how transfers are generated and
//! executed (only the value shapes below are shared with the client).
//!
//! # Value shapes
//!
//! - `f = "transfer"`: `{"from": 0, "to": 3, "amount": 5}` (account ids are
//!   non-negative integers, the amount positive), the same at completion.
//!   Transfers are validated for shape only: with all balances read at once,
//!   a read alone shows whether money leaked.
//! - `f = "read"`: `null` at invocation; at `ok`, an object from account id
//!   (as a decimal string, JSON keys being strings) to balance, e.g.
//!   `{"0": 10, "1": 7, "2": 3}`; a `null` balance means the row was
//!   missing. Build values with [`transfer_value`] and [`read_value`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::history::Event;
use crate::op::{self, Op, Outcome};
use crate::verdict::{Anomaly, AnomalyKind, CheckError, Verdict};

/// The operation names of the bank workload.
pub const TRANSFER: &str = "transfer";
pub const READ: &str = "read";

/// What the bank test promises.
#[derive(Debug, Clone)]
pub struct BankOptions {
    /// Every account; each read must show exactly these.
    pub accounts: Vec<u64>,
    /// The sum of all balances, constant for the whole test.
    pub total: i64,
    /// Whether balances may go below zero.
    pub negative_allowed: bool,
}

/// The value of a `transfer` operation.
pub fn transfer_value(from: u64, to: u64, amount: u64) -> Value {
    json!({"from": from, "to": to, "amount": amount})
}

/// The value of an `ok` read: `None` for a missing balance.
pub fn read_value(balances: &BTreeMap<u64, Option<i64>>) -> Value {
    Value::Object(
        balances
            .iter()
            .map(|(account, balance)| (account.to_string(), json!(balance)))
            .collect(),
    )
}

/// Parse an `ok` read.
pub fn parse_read(v: &Value) -> Result<BTreeMap<u64, Option<i64>>, String> {
    let map = v
        .as_object()
        .ok_or_else(|| format!("read {v} is not an object of balances"))?;
    map.iter()
        .map(|(k, b)| {
            let account = k
                .parse::<u64>()
                .map_err(|_| format!("account id `{k}` is not a non-negative integer"))?;
            let balance = match b {
                Value::Null => None,
                b => Some(
                    b.as_i64()
                        .ok_or_else(|| format!("balance of account {k} ({b}) is not an integer"))?,
                ),
            };
            Ok((account, balance))
        })
        .collect()
}

/// Parse a transfer: `(from, to, amount)`.
pub fn parse_transfer(v: &Value) -> Result<(u64, u64, u64), String> {
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("transfer {v}: `{name}` is not a non-negative integer"))
    };
    let amount = field("amount")?;
    if amount == 0 {
        return Err(format!("transfer {v}: amount must be positive"));
    }
    Ok((field("from")?, field("to")?, amount))
}

/// Check a bank history. Operations other than `transfer` and `read` are
/// ignored (and counted as `ignored-ops`).
pub fn check(history: &[Event], options: &BankOptions) -> Result<Verdict, CheckError> {
    if options.accounts.is_empty() {
        return Err(CheckError::Options("the bank has no accounts".into()));
    }
    let accounts: BTreeSet<u64> = options.accounts.iter().copied().collect();
    let mut verdict = Verdict::new("bank");
    for op in op::pair(history)? {
        match op.f() {
            TRANSFER => {
                parse_transfer(&op.invoke.value).map_err(|reason| CheckError::BadValue {
                    index: op.index,
                    f: TRANSFER.into(),
                    reason,
                })?;
                verdict.count(outcome_counter("transfers", op.outcome()), 1);
            }
            READ => {
                verdict.count(outcome_counter("reads", op.outcome()), 1);
                if op.outcome() == Outcome::Ok {
                    check_read(&op, &accounts, options, &mut verdict)?;
                }
            }
            _ => verdict.count("ignored-ops", 1),
        }
    }
    let bad = verdict
        .anomalies
        .iter()
        .map(|a| a.ops[0].index)
        .collect::<BTreeSet<_>>()
        .len();
    verdict.count("bad-reads", bad as u64);
    Ok(verdict)
}

fn outcome_counter(what: &str, outcome: Outcome) -> &'static str {
    match (what, outcome) {
        ("transfers", Outcome::Ok) => "ok-transfers",
        ("transfers", Outcome::Fail) => "failed-transfers",
        ("transfers", Outcome::Info) => "indeterminate-transfers",
        (_, Outcome::Ok) => "ok-reads",
        (_, Outcome::Fail) => "failed-reads",
        (_, Outcome::Info) => "indeterminate-reads",
    }
}

fn check_read(
    op: &Op<'_>,
    accounts: &BTreeSet<u64>,
    options: &BankOptions,
    verdict: &mut Verdict,
) -> Result<(), CheckError> {
    let balances = parse_read(op.value()).map_err(|reason| CheckError::BadValue {
        index: op.completion_index.unwrap_or(op.index),
        f: READ.into(),
        reason,
    })?;
    let shown = op.value().to_string();
    let mut report = |kind, explanation: String| {
        verdict.push(Anomaly {
            kind,
            violation: true,
            explanation,
            ops: vec![op.evidence()],
            cycle: Vec::new(),
            details: json!({"balances": op.value(), "total": options.total}),
        })
    };

    let unexpected: Vec<u64> = balances
        .keys()
        .filter(|a| !accounts.contains(a))
        .copied()
        .collect();
    if !unexpected.is_empty() {
        report(
            AnomalyKind::UnexpectedAccount,
            format!(
                "{} read {shown}, with accounts {unexpected:?} that do not exist",
                op.label()
            ),
        );
    }
    let missing: Vec<u64> = accounts
        .iter()
        .filter(|a| !matches!(balances.get(a), Some(Some(_))))
        .copied()
        .collect();
    if !missing.is_empty() {
        report(
            AnomalyKind::MissingBalance,
            format!(
                "{} read {shown}, without a balance for accounts {missing:?}",
                op.label()
            ),
        );
    }
    let negative: Vec<(u64, i64)> = balances
        .iter()
        .filter_map(|(a, b)| b.filter(|b| *b < 0).map(|b| (*a, b)))
        .collect();
    if !negative.is_empty() && !options.negative_allowed {
        report(
            AnomalyKind::NegativeBalance,
            format!(
                "{} read {shown}: negative balances {negative:?}",
                op.label()
            ),
        );
    }
    // with a balance missing the sum means nothing (already reported)
    if missing.is_empty() {
        let sum: i128 = balances.values().flatten().map(|b| *b as i128).sum();
        if sum != options.total as i128 {
            report(
                AnomalyKind::WrongTotal,
                format!(
                    "{} read {shown}: the balances sum to {sum}, not {}",
                    op.label(),
                    options.total
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventType;
    use crate::op::testing::{HistoryBuilder, Planned, interleave};
    use proptest::prelude::*;

    fn options() -> BankOptions {
        BankOptions {
            accounts: vec![0, 1, 2],
            total: 30,
            negative_allowed: false,
        }
    }

    fn read(h: &mut HistoryBuilder, p: u64, balances: Value) -> usize {
        let id = h.invoke(p, READ, Value::Null);
        h.complete(EventType::Ok, p, READ, balances);
        id
    }

    fn transfer(h: &mut HistoryBuilder, p: u64, kind: EventType, from: u64, to: u64, n: u64) {
        h.invoke(p, TRANSFER, transfer_value(from, to, n));
        h.complete(kind, p, TRANSFER, transfer_value(from, to, n));
    }

    fn kinds(v: &Verdict) -> Vec<AnomalyKind> {
        v.anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn values_round_trip() {
        let balances = BTreeMap::from([(0, Some(10)), (1, None), (12, Some(-3))]);
        let v = read_value(&balances);
        assert_eq!(v, json!({"0": 10, "1": null, "12": -3}));
        assert_eq!(parse_read(&v).unwrap(), balances);
        assert_eq!(parse_transfer(&transfer_value(1, 2, 5)).unwrap(), (1, 2, 5));
        assert!(parse_read(&json!([1, 2])).is_err());
        assert!(parse_read(&json!({"x": 1})).is_err());
        assert!(parse_read(&json!({"1": 1.5})).is_err());
        assert!(parse_transfer(&json!({"from": 1, "to": 2})).is_err());
        assert!(parse_transfer(&transfer_value(1, 2, 0)).is_err());
    }

    #[test]
    fn consistent_reads_around_transfers_of_every_outcome_are_valid() {
        let mut h = HistoryBuilder::default();
        read(&mut h, 1, json!({"0": 10, "1": 10, "2": 10}));
        transfer(&mut h, 2, EventType::Ok, 0, 1, 5);
        transfer(&mut h, 2, EventType::Fail, 1, 2, 50);
        transfer(&mut h, 3, EventType::Info, 2, 0, 1);
        h.invoke(4, TRANSFER, transfer_value(0, 2, 1)); // never completes
        read(&mut h, 1, json!({"0": 6, "1": 15, "2": 9}));
        let v = check(&h.events, &options()).unwrap();
        assert!(v.valid && v.anomalies.is_empty(), "{:#?}", v.anomalies);
        assert_eq!(v.counts["ok-reads"], 2);
        assert_eq!(v.counts["ok-transfers"], 1);
        assert_eq!(v.counts["failed-transfers"], 1);
        assert_eq!(v.counts["indeterminate-transfers"], 2);
        assert_eq!(v.counts["bad-reads"], 0);
    }

    #[test]
    fn wrong_total_money_appeared() {
        let mut h = HistoryBuilder::default();
        read(&mut h, 1, json!({"0": 10, "1": 10, "2": 10}));
        transfer(&mut h, 2, EventType::Ok, 0, 1, 5);
        let bad = read(&mut h, 1, json!({"0": 10, "1": 15, "2": 10}));
        let v = check(&h.events, &options()).unwrap();
        assert!(!v.valid);
        assert_eq!(kinds(&v), vec![AnomalyKind::WrongTotal]);
        let a = &v.anomalies[0];
        assert_eq!(a.ops[0].index, bad);
        assert!(
            a.explanation.contains("sum to 35, not 30"),
            "{}",
            a.explanation
        );
        assert_eq!(v.counts["bad-reads"], 1);
    }

    #[test]
    fn negative_balance_even_when_the_total_is_right() {
        let mut h = HistoryBuilder::default();
        let bad = read(&mut h, 1, json!({"0": -5, "1": 25, "2": 10}));
        let v = check(&h.events, &options()).unwrap();
        assert_eq!(kinds(&v), vec![AnomalyKind::NegativeBalance]);
        assert_eq!(v.anomalies[0].ops[0].index, bad);
        let allowed = BankOptions {
            negative_allowed: true,
            ..options()
        };
        assert!(check(&h.events, &allowed).unwrap().valid);
    }

    #[test]
    fn missing_and_unexpected_accounts() {
        let mut h = HistoryBuilder::default();
        let missing = read(&mut h, 1, json!({"0": 10, "1": null, "2": 10}));
        let extra = read(&mut h, 1, json!({"0": 10, "1": 10, "2": 10, "7": 0}));
        let v = check(&h.events, &options()).unwrap();
        assert_eq!(
            kinds(&v),
            vec![AnomalyKind::MissingBalance, AnomalyKind::UnexpectedAccount]
        );
        assert_eq!(v.anomalies[0].ops[0].index, missing);
        assert_eq!(v.anomalies[1].ops[0].index, extra);
    }

    #[test]
    fn every_bad_read_is_reported() {
        let mut h = HistoryBuilder::default();
        let a = read(&mut h, 1, json!({"0": 11, "1": 10, "2": 10}));
        read(&mut h, 1, json!({"0": 10, "1": 10, "2": 10}));
        let b = read(&mut h, 2, json!({"0": -1, "1": 10, "2": 10}));
        let v = check(&h.events, &options()).unwrap();
        let bad: Vec<(AnomalyKind, usize)> = v
            .anomalies
            .iter()
            .map(|x| (x.kind, x.ops[0].index))
            .collect();
        assert_eq!(
            bad,
            vec![
                (AnomalyKind::WrongTotal, a),
                (AnomalyKind::NegativeBalance, b),
                (AnomalyKind::WrongTotal, b)
            ]
        );
        assert_eq!(v.counts["bad-reads"], 2);
    }

    #[test]
    fn malformed_values_and_options_are_errors() {
        let mut h = HistoryBuilder::default();
        read(&mut h, 1, json!([10, 10, 10]));
        assert!(matches!(
            check(&h.events, &options()),
            Err(CheckError::BadValue { index: 1, .. })
        ));
        let mut h = HistoryBuilder::default();
        h.invoke(1, TRANSFER, json!({"from": 0}));
        assert!(matches!(
            check(&h.events, &options()),
            Err(CheckError::BadValue { index: 0, .. })
        ));
        let none = BankOptions {
            accounts: vec![],
            ..options()
        };
        assert!(matches!(check(&[], &none), Err(CheckError::Options(_))));
    }

    #[test]
    fn huge_balances_do_not_overflow() {
        let mut h = HistoryBuilder::default();
        read(
            &mut h,
            1,
            json!({"0": i64::MAX, "1": i64::MAX, "2": i64::MIN}),
        );
        let v = check(&h.events, &options()).unwrap();
        assert!(v.has(AnomalyKind::WrongTotal));
    }

    /// (from, to, amount, outcome selector, before, after) per operation; a
    /// `from == to` entry is a read instead.
    type Plan = Vec<(u64, u64, u64, u8, u64, u64)>;

    fn serial_bank_history(plan: &Plan) -> Vec<crate::history::Event> {
        let mut balances = [10i64; 3];
        let mut ops = Vec::new();
        for (i, &(from, to, amount, outcome, before, after)) in plan.iter().enumerate() {
            let point = 1_000 + 300 * i as u64;
            let (invoke, complete) = (point - before, point + after);
            if from == to {
                let seen: BTreeMap<u64, Option<i64>> =
                    (0..3).map(|a| (a, Some(balances[a as usize]))).collect();
                let kind = if outcome < 17 {
                    EventType::Ok
                } else {
                    EventType::Info
                };
                let completion = if kind == EventType::Ok {
                    read_value(&seen)
                } else {
                    Value::Null
                };
                ops.push(Planned {
                    invoke,
                    complete,
                    f: READ,
                    asked: Value::Null,
                    kind,
                    completion,
                });
                continue;
            }
            // a transfer that would overdraw fails, like the real client's
            let possible = balances[from as usize] >= amount as i64;
            let (kind, applied) = match outcome {
                _ if !possible => (EventType::Fail, false),
                0..14 => (EventType::Ok, true),
                14..17 => (EventType::Fail, false),
                17..19 => (EventType::Info, true),
                _ => (EventType::Info, false),
            };
            if applied {
                balances[from as usize] -= amount as i64;
                balances[to as usize] += amount as i64;
            }
            let value = transfer_value(from, to, amount);
            ops.push(Planned {
                invoke,
                complete,
                f: TRANSFER,
                asked: value.clone(),
                kind,
                completion: value,
            });
        }
        interleave(&ops)
    }

    proptest! {
        #[test]
        fn serial_executions_are_always_valid(
            plan in prop::collection::vec(
                (0..3u64, 0..3u64, 1..8u64, 0..20u8, 0..250u64, 0..250u64),
                1..80,
            )
        ) {
            let events = serial_bank_history(&plan);
            let v = check(&events, &options()).unwrap();
            prop_assert!(v.valid && v.anomalies.is_empty(), "{:#?}", v.anomalies);
        }

        #[test]
        fn arbitrary_values_never_panic(
            raw in prop::collection::vec(
                (0..4u8, 0..3u64, prop::bool::ANY, prop_oneof![
                    Just(json!(null)),
                    Just(json!({"0": 1, "1": "x"})),
                    Just(json!({"0": 30, "9": -1})),
                    Just(json!({"from": 0, "to": 1, "amount": 3})),
                    Just(json!([1, 2])),
                ]),
                0..20,
            )
        ) {
            let events: Vec<_> = raw
                .into_iter()
                .enumerate()
                .map(|(i, (kind, process, is_read, value))| crate::history::Event {
                    kind: [EventType::Invoke, EventType::Ok, EventType::Fail, EventType::Info]
                        [kind as usize],
                    process,
                    node: "n1".into(),
                    time_ns: i as u64,
                    f: if is_read { READ } else { TRANSFER }.into(),
                    value,
                    error: None,
                })
                .collect();
            let _ = check(&events, &options());
        }
    }
}
