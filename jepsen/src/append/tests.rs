//! Tests of the list-append checker: one hand-built history per anomaly
//! kind, clean histories, and property tests over serial executions.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::history::EventType;
use crate::op::testing::{HistoryBuilder, Planned, interleave};

/// The invocation form of a transaction: reads are `null`.
fn asked(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(mops) = v.as_array_mut() {
        for m in mops {
            if m.get(0) == Some(&json!("r"))
                && let Some(slot) = m.get_mut(2)
            {
                *slot = Value::Null;
            }
        }
    }
    v
}

/// A history written transaction by transaction; each method returns the
/// operation's id (the index of its invoke event).
#[derive(Default)]
struct H {
    b: HistoryBuilder,
    pending: HashMap<u64, Value>,
}

impl H {
    fn invoke(&mut self, p: u64, v: Value) -> usize {
        self.pending.insert(p, v.clone());
        self.b.invoke(p, TXN, asked(&v))
    }

    fn ok(&mut self, p: u64) {
        let v = self.pending.remove(&p).unwrap();
        self.b.complete(EventType::Ok, p, TXN, v);
    }

    fn fail(&mut self, p: u64) {
        let v = self.pending.remove(&p).unwrap();
        self.b.complete(EventType::Fail, p, TXN, asked(&v));
    }

    fn info(&mut self, p: u64) {
        let v = self.pending.remove(&p).unwrap();
        self.b.complete(EventType::Info, p, TXN, asked(&v));
    }

    /// Invoke and complete with `ok` right away.
    fn txn(&mut self, p: u64, v: Value) -> usize {
        let id = self.invoke(p, v);
        self.ok(p);
        id
    }

    fn check(&self, model: Model) -> Verdict {
        let options = AppendOptions {
            model,
            ..AppendOptions::default()
        };
        check(&self.b.events, &options).unwrap()
    }
}

fn violations(v: &Verdict) -> Vec<AnomalyKind> {
    v.anomalies
        .iter()
        .filter(|a| a.violation)
        .map(|a| a.kind)
        .collect()
}

fn op_ids(a: &Anomaly) -> Vec<usize> {
    a.ops.iter().map(|o| o.index).collect()
}

fn one(v: &Verdict, kind: AnomalyKind) -> &Anomaly {
    let found: Vec<_> = v.of_kind(kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind}, got {:#?}",
        v.anomalies
    );
    found[0]
}

fn edges(a: &Anomaly) -> Vec<EdgeKind> {
    a.cycle.iter().map(|s| s.edge).collect()
}

/// The cycle is closed and visits exactly `ops` (in some rotation).
fn assert_cycle_over(a: &Anomaly, ops: &[usize]) {
    let n = a.cycle.len();
    assert!(n >= 2, "{a:#?}");
    for i in 0..n {
        assert_eq!(
            a.cycle[i].to,
            a.cycle[(i + 1) % n].from,
            "open cycle {a:#?}"
        );
        assert!(!a.cycle[i].why.is_empty());
    }
    let mut got: Vec<usize> = a.cycle.iter().map(|s| s.from).collect();
    got.sort_unstable();
    let mut want = ops.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{a:#?}");
    assert_eq!(op_ids(a).len(), n);
}

// ---- value shape ----

#[test]
fn micro_ops_round_trip_through_json() {
    let mops = vec![
        Mop::Read {
            key: 3,
            value: None,
        },
        Mop::Append { key: 3, value: 17 },
        Mop::Read {
            key: 4,
            value: Some(vec![1, 2]),
        },
    ];
    let v = txn_value(&mops);
    assert_eq!(
        v,
        json!([["r", 3, null], ["append", 3, 17], ["r", 4, [1, 2]]])
    );
    assert_eq!(parse_txn(&v).unwrap(), mops);
    for bad in [
        json!({"r": 1}),
        json!([["r", 1]]),
        json!([["w", 1, 2]]),
        json!([["append", -1, 2]]),
        json!([["append", 1, "x"]]),
        json!([["r", 1, 5]]),
        json!([["r", 1, [1, "2"]]]),
    ] {
        assert!(parse_txn(&bad).is_err(), "{bad}");
    }
}

#[test]
fn models_parse_by_their_names() {
    for m in [
        Model::SnapshotIsolation,
        Model::StrongSessionSnapshotIsolation,
        Model::StrongSnapshotIsolation,
        Model::Serializable,
        Model::StrictSerializable,
    ] {
        assert_eq!(m.name().parse::<Model>().unwrap(), m);
        assert_eq!(serde_json::to_value(m).unwrap(), json!(m.name()));
    }
    assert!("read-committed".parse::<Model>().is_err());
    assert_eq!(Model::default(), Model::SnapshotIsolation);
}

// ---- one history per anomaly ----

#[test]
fn g0_two_transactions_append_to_two_keys_in_opposite_orders() {
    let mut h = H::default();
    let t1 = h.txn(1, json!([["append", 1, 1], ["append", 2, 1]]));
    let t2 = h.txn(2, json!([["append", 1, 2], ["append", 2, 2]]));
    h.txn(3, json!([["r", 1, [1, 2]], ["r", 2, [2, 1]]]));
    let v = h.check(Model::SnapshotIsolation);
    assert_eq!(violations(&v), vec![AnomalyKind::G0]);
    assert!(!v.valid);
    let g0 = one(&v, AnomalyKind::G0);
    assert_cycle_over(g0, &[t1, t2]);
    assert_eq!(edges(g0), vec![EdgeKind::Ww, EdgeKind::Ww]);
}

#[test]
fn g1c_two_transactions_each_read_the_others_append() {
    let mut h = H::default();
    let t1 = h.invoke(1, json!([["append", 1, 1], ["r", 2, [1]]]));
    let t2 = h.invoke(2, json!([["append", 2, 1], ["r", 1, [1]]]));
    h.ok(1);
    h.ok(2);
    let v = h.check(Model::SnapshotIsolation);
    assert_eq!(violations(&v), vec![AnomalyKind::G1c]);
    let g1c = one(&v, AnomalyKind::G1c);
    assert_cycle_over(g1c, &[t1, t2]);
    assert_eq!(edges(g1c), vec![EdgeKind::Wr, EdgeKind::Wr]);
}

#[test]
fn g_single_read_skew() {
    // t2 sees t1's append to key 2 but not its append to key 1
    let mut h = H::default();
    let t1 = h.txn(1, json!([["append", 1, 1], ["append", 2, 1]]));
    let t2 = h.txn(2, json!([["r", 1, []], ["r", 2, [1]]]));
    h.txn(3, json!([["r", 1, [1]]]));
    let v = h.check(Model::SnapshotIsolation);
    assert_eq!(violations(&v), vec![AnomalyKind::GSingle]);
    let g = one(&v, AnomalyKind::GSingle);
    assert_cycle_over(g, &[t1, t2]);
    let mut kinds = edges(g);
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(kinds, vec![EdgeKind::Rw, EdgeKind::Wr]);
    assert!(g.explanation.contains("exactly one read-write"));
    assert!(!v.has(AnomalyKind::G2Item), "a G-single is not also a G2");
}

#[test]
fn g2_item_write_skew_is_allowed_by_snapshot_isolation_only() {
    let mut h = H::default();
    let t1 = h.invoke(1, json!([["r", 1, []], ["r", 2, []], ["append", 1, 1]]));
    let t2 = h.invoke(2, json!([["r", 1, []], ["r", 2, []], ["append", 2, 1]]));
    h.ok(1);
    h.ok(2);
    h.txn(3, json!([["r", 1, [1]], ["r", 2, [1]]]));

    let si = h.check(Model::SnapshotIsolation);
    assert!(si.valid, "{:#?}", si.anomalies);
    let g2 = one(&si, AnomalyKind::G2Item);
    assert!(!g2.violation);
    assert_cycle_over(g2, &[t1, t2]);
    assert_eq!(edges(g2), vec![EdgeKind::Rw, EdgeKind::Rw]);

    let ser = h.check(Model::Serializable);
    assert_eq!(violations(&ser), vec![AnomalyKind::G2Item]);
}

#[test]
fn lost_update_two_transactions_read_the_same_version_and_append() {
    let mut h = H::default();
    let t1 = h.invoke(1, json!([["r", 1, [7]], ["append", 1, 1]]));
    let t2 = h.invoke(2, json!([["r", 1, [7]], ["append", 1, 2]]));
    h.ok(1);
    h.ok(2);
    let t0 = h.txn(3, json!([["append", 1, 7]]));
    h.txn(3, json!([["r", 1, [7, 1, 2]]]));
    let v = h.check(Model::SnapshotIsolation);
    let lost = one(&v, AnomalyKind::LostUpdate);
    assert!(lost.violation);
    assert_eq!(op_ids(lost), vec![t1, t2]);
    assert_eq!(lost.details["key"], 1);
    assert_eq!(lost.details["read_last"], 7);
    // the same pair also closes a G-single: t1 -ww-> t2 -rw-> t1
    assert_cycle_over(one(&v, AnomalyKind::GSingle), &[t1, t2]);
    assert!(!op_ids(lost).contains(&t0));
}

#[test]
fn g1a_aborted_read() {
    let mut h = H::default();
    let t1 = h.invoke(1, json!([["append", 1, 1]]));
    h.fail(1);
    let t2 = h.txn(2, json!([["r", 1, [1]]]));
    let v = h.check(Model::SnapshotIsolation);
    assert_eq!(violations(&v), vec![AnomalyKind::G1a]);
    let g1a = one(&v, AnomalyKind::G1a);
    assert_eq!(op_ids(g1a), vec![t2, t1]);
    assert_eq!(g1a.ops[1].event.kind, EventType::Fail);
}

#[test]
fn g1b_intermediate_read() {
    let mut h = H::default();
    let t1 = h.txn(1, json!([["append", 1, 1], ["append", 1, 2]]));
    let t2 = h.txn(2, json!([["r", 1, [1]]]));
    h.txn(3, json!([["r", 1, [1, 2]]]));
    let v = h.check(Model::SnapshotIsolation);
    let g1b = one(&v, AnomalyKind::G1b);
    assert!(g1b.violation);
    assert_eq!(op_ids(g1b), vec![t2, t1]);
    assert_eq!(g1b.details["value"], 1);
    // a read of the final append is fine
    assert!(
        !v.anomalies
            .iter()
            .any(|a| a.kind == AnomalyKind::G1b && a.ops[0].index != t2)
    );
}

#[test]
fn internal_a_read_misses_the_transactions_own_append() {
    let mut h = H::default();
    let t1 = h.txn(1, json!([["append", 1, 5], ["r", 1, []]]));
    let v = h.check(Model::SnapshotIsolation);
    assert_eq!(violations(&v), vec![AnomalyKind::Internal]);
    assert_eq!(op_ids(one(&v, AnomalyKind::Internal)), vec![t1]);

    // a second read that disagrees with the first read plus the append
    let mut h = H::default();
    h.txn(1, json!([["append", 1, 1]]));
    let t2 = h.txn(2, json!([["r", 1, [1]], ["append", 1, 2], ["r", 1, [1]]]));
    let v = h.check(Model::SnapshotIsolation);
    let internal = one(&v, AnomalyKind::Internal);
    assert_eq!(op_ids(internal), vec![t2]);
    assert_eq!(internal.details["expected"], "exactly [1, 2]");
    // reads that agree are fine
    let mut h = H::default();
    h.txn(1, json!([["append", 1, 1]]));
    h.txn(
        2,
        json!([["r", 1, [1]], ["append", 1, 2], ["r", 1, [1, 2]]]),
    );
    h.txn(3, json!([["append", 1, 3], ["r", 1, [1, 2, 3]]]));
    assert!(h.check(Model::StrictSerializable).anomalies.is_empty());
}

#[test]
fn incompatible_order_two_reads_disagree() {
    let mut h = H::default();
    h.txn(1, json!([["append", 1, 1]]));
    h.txn(2, json!([["append", 1, 2]]));
    let t3 = h.txn(3, json!([["r", 1, [1, 2]]]));
    let t4 = h.txn(4, json!([["r", 1, [2, 1]]]));
    let v = h.check(Model::SnapshotIsolation);
    assert_eq!(violations(&v), vec![AnomalyKind::IncompatibleOrder]);
    let bad = one(&v, AnomalyKind::IncompatibleOrder);
    assert_eq!(op_ids(bad), vec![t3, t4]);
    assert_eq!(bad.details["reads"], json!([[1, 2], [2, 1]]));
}

#[test]
fn duplicate_elements_in_a_read() {
    let mut h = H::default();
    h.txn(1, json!([["append", 1, 1]]));
    let t2 = h.txn(2, json!([["r", 1, [1, 1]]]));
    let v = h.check(Model::SnapshotIsolation);
    assert_eq!(violations(&v), vec![AnomalyKind::DuplicateElements]);
    let dup = one(&v, AnomalyKind::DuplicateElements);
    assert_eq!(op_ids(dup), vec![t2]);
    assert_eq!(dup.details["duplicates"], json!([1]));
}

#[test]
fn garbage_read_of_a_value_nobody_appended() {
    let mut h = H::default();
    let t1 = h.txn(1, json!([["r", 1, [9]]]));
    let v = h.check(Model::SnapshotIsolation);
    assert_eq!(violations(&v), vec![AnomalyKind::GarbageRead]);
    assert_eq!(op_ids(one(&v, AnomalyKind::GarbageRead)), vec![t1]);
}

#[test]
fn g_single_realtime_a_stale_read_after_a_commit() {
    let mut h = H::default();
    let t1 = h.txn(1, json!([["append", 1, 1]]));
    let t2 = h.txn(2, json!([["r", 1, []]]));
    h.txn(3, json!([["r", 1, [1]]]));
    assert!(h.check(Model::SnapshotIsolation).anomalies.is_empty());
    assert!(
        h.check(Model::StrongSessionSnapshotIsolation)
            .anomalies
            .is_empty()
    );
    for model in [Model::StrongSnapshotIsolation, Model::StrictSerializable] {
        let v = h.check(model);
        assert_eq!(
            violations(&v),
            vec![AnomalyKind::GSingleRealtime],
            "{model:?}"
        );
        let g = one(&v, AnomalyKind::GSingleRealtime);
        assert_cycle_over(g, &[t1, t2]);
        assert!(edges(g).contains(&EdgeKind::Realtime));
        assert!(edges(g).contains(&EdgeKind::Rw));
    }
}

#[test]
fn g_single_process_a_client_misses_its_own_earlier_commit() {
    let mut h = H::default();
    let t1 = h.txn(1, json!([["append", 1, 1]]));
    let t2 = h.txn(1, json!([["r", 1, []]]));
    h.txn(3, json!([["r", 1, [1]]]));
    assert!(h.check(Model::SnapshotIsolation).valid);
    let v = h.check(Model::StrongSessionSnapshotIsolation);
    assert_eq!(violations(&v), vec![AnomalyKind::GSingleProcess]);
    let g = one(&v, AnomalyKind::GSingleProcess);
    assert_cycle_over(g, &[t1, t2]);
    assert!(edges(g).contains(&EdgeKind::Process));
}

#[test]
fn g0_realtime_writes_ordered_against_real_time() {
    // t1 commits before t2 begins, yet key 1's order puts t2's append first
    let mut h = H::default();
    let t1 = h.txn(1, json!([["append", 1, 1]]));
    let t2 = h.txn(2, json!([["append", 1, 2]]));
    h.txn(3, json!([["r", 1, [2, 1]]]));
    assert!(h.check(Model::Serializable).valid);
    let v = h.check(Model::StrictSerializable);
    assert_eq!(violations(&v), vec![AnomalyKind::G0Realtime]);
    assert_cycle_over(one(&v, AnomalyKind::G0Realtime), &[t1, t2]);
}

#[test]
fn an_observed_indeterminate_transaction_committed_and_joins_cycles() {
    let mut h = H::default();
    let t1 = h.invoke(1, json!([["append", 1, 1], ["append", 2, 1]]));
    h.info(1);
    let t2 = h.txn(2, json!([["r", 1, []], ["r", 2, [1]]]));
    h.txn(3, json!([["r", 1, [1]]]));
    let v = h.check(Model::SnapshotIsolation);
    assert_eq!(violations(&v), vec![AnomalyKind::GSingle]);
    let g = one(&v, AnomalyKind::GSingle);
    assert_cycle_over(g, &[t1, t2]);
    let info = g.ops.iter().find(|o| o.index == t1).unwrap();
    assert_eq!(info.event.kind, EventType::Info);
    assert_eq!(v.counts["info-observed"], 1);
}

#[test]
fn indeterminate_transactions_alone_are_never_anomalies() {
    let mut h = H::default();
    // never completed, never observed
    h.invoke(9, json!([["append", 1, 100], ["r", 2, null]]));
    // info, unobserved, and its "reads" are unknown
    h.invoke(1, json!([["append", 1, 1], ["r", 1, null]]));
    h.info(1);
    h.txn(2, json!([["r", 1, []]]));
    // info, observed
    h.invoke(3, json!([["append", 2, 1]]));
    h.info(3);
    h.txn(2, json!([["r", 2, [1]]]));
    for model in [Model::SnapshotIsolation, Model::StrictSerializable] {
        let v = h.check(model);
        assert!(v.valid && v.anomalies.is_empty(), "{:#?}", v.anomalies);
    }
}

#[test]
fn a_clean_concurrent_history_is_valid_under_every_model() {
    let mut h = H::default();
    h.invoke(1, json!([["append", 1, 1], ["r", 2, [1]]]));
    h.invoke(2, json!([["append", 2, 1]]));
    h.ok(2);
    h.ok(1);
    h.invoke(3, json!([["r", 1, [1]], ["append", 1, 2]]));
    h.invoke(4, json!([["append", 2, 2]]));
    h.fail(4);
    h.ok(3);
    h.invoke(5, json!([["append", 1, 3], ["append", 2, 3]]));
    h.info(5);
    h.txn(
        1,
        json!([["r", 1, [1, 2, 3]], ["r", 2, [1, 3]], ["r", 3, []]]),
    );
    for model in [
        Model::SnapshotIsolation,
        Model::StrongSessionSnapshotIsolation,
        Model::StrongSnapshotIsolation,
        Model::Serializable,
        Model::StrictSerializable,
    ] {
        let v = h.check(model);
        assert!(
            v.valid && v.anomalies.is_empty(),
            "{model:?}: {:#?}",
            v.anomalies
        );
        assert_eq!(v.counts["ok"], 4);
        assert_eq!(v.counts["fail"], 1);
        assert_eq!(v.counts["info"], 1);
    }
}

#[test]
fn other_operations_are_ignored_and_counted() {
    let mut h = H::default();
    h.b.invoke(7, "kill", json!("n1"));
    h.b.complete(EventType::Info, 7, "kill", json!("n1"));
    h.txn(1, json!([["append", 1, 1]]));
    let v = h.check(Model::SnapshotIsolation);
    assert!(v.valid);
    assert_eq!(v.counts["ignored-ops"], 1);
}

#[test]
fn an_exhausted_search_is_not_a_pass() {
    let mut h = H::default();
    h.txn(1, json!([["append", 1, 1], ["append", 2, 1]]));
    h.txn(2, json!([["r", 1, []], ["r", 2, [1]]]));
    h.txn(3, json!([["r", 1, [1]]]));
    let options = AppendOptions {
        model: Model::SnapshotIsolation,
        search_budget: 0,
    };
    let v = check(&h.b.events, &options).unwrap();
    assert!(!v.valid);
    let incomplete: Vec<_> = v.of_kind(AnomalyKind::CycleSearchIncomplete).collect();
    assert_eq!(incomplete.len(), 2, "{incomplete:#?}");
    assert_eq!(incomplete[0].details["class"], "G-single");
    assert!(incomplete[0].violation);
    assert_eq!(incomplete[1].details["class"], "G2-item");
    assert!(!incomplete[1].violation, "G2-item is allowed under SI");
}

#[test]
fn malformed_histories_are_errors_not_panics() {
    let mut h = H::default();
    h.b.invoke(1, TXN, json!({"append": 1}));
    assert!(matches!(
        check(&h.b.events, &AppendOptions::default()),
        Err(CheckError::BadValue { index: 0, .. })
    ));

    let mut h = H::default();
    h.b.invoke(1, TXN, json!([["append", 1, 1]]));
    h.b.complete(EventType::Ok, 1, TXN, json!([["append", 1, 2]]));
    assert!(matches!(
        check(&h.b.events, &AppendOptions::default()),
        Err(CheckError::BadValue { index: 1, .. })
    ));

    let mut h = H::default();
    h.txn(1, json!([["append", 1, 1]]));
    h.txn(2, json!([["append", 1, 1]]));
    assert_eq!(
        check(&h.b.events, &AppendOptions::default()).unwrap_err(),
        CheckError::DuplicateWrite {
            key: "1".into(),
            value: "1".into(),
            first: 0,
            second: 2
        }
    );
}

#[test]
fn the_verdict_names_the_cycle_in_json() {
    let mut h = H::default();
    h.txn(1, json!([["append", 1, 1], ["append", 2, 1]]));
    h.txn(2, json!([["r", 1, []], ["r", 2, [1]]]));
    h.txn(3, json!([["r", 1, [1]]]));
    let json = serde_json::to_value(h.check(Model::SnapshotIsolation)).unwrap();
    assert_eq!(json["workload"], "append");
    assert_eq!(json["model"], "snapshot-isolation");
    assert_eq!(json["valid"], false);
    let a = &json["anomalies"][0];
    assert_eq!(a["kind"], "G-single");
    assert_eq!(a["ops"][0]["type"], "ok");
    assert_eq!(a["ops"][0]["f"], "txn");
    let whys: Vec<&str> = a["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["why"].as_str().unwrap())
        .collect();
    assert!(
        whys.iter().any(|w| w.contains("read key 1 empty")),
        "{whys:?}"
    );
}

// ---- property tests ----

/// One planned transaction: micro-ops (read?, key), an outcome selector and
/// how long before/after its serialization point the client saw it.
type Plan = Vec<(Vec<(bool, u64)>, u8, u64, u64)>;

fn plan() -> impl Strategy<Value = Plan> {
    prop::collection::vec(
        (
            prop::collection::vec((any::<bool>(), 0..4u64), 1..=4),
            0..20u8,
            0..250u64,
            0..250u64,
        ),
        1..60,
    )
}

/// Run the plan serially against an in-memory store and record it with
/// overlapping invoke/complete times around each serialization point.
fn serial_history(plan: &Plan) -> Vec<Event> {
    let mut store: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut next: HashMap<u64, u64> = HashMap::new();
    let mut ops = Vec::new();
    for (i, (mops, outcome, before, after)) in plan.iter().enumerate() {
        let point = 1_000 + 300 * i as u64;
        let (kind, applied) = match outcome {
            0..14 => (EventType::Ok, true),
            14..17 => (EventType::Fail, false),
            17..19 => (EventType::Info, true),
            _ => (EventType::Info, false),
        };
        let mut view = store.clone();
        let mut done = Vec::new();
        for &(read, key) in mops {
            if read {
                done.push(Mop::Read {
                    key,
                    value: Some(view.get(&key).cloned().unwrap_or_default()),
                });
            } else {
                let n = next.entry(key).or_insert(0);
                *n += 1;
                view.entry(key).or_default().push(*n);
                done.push(Mop::Append { key, value: *n });
            }
        }
        if applied {
            store = view;
        }
        let asked_value = asked(&txn_value(&done));
        let completion = if kind == EventType::Ok {
            txn_value(&done)
        } else {
            asked_value.clone()
        };
        ops.push(Planned {
            invoke: point - before,
            complete: point + after,
            f: TXN,
            asked: asked_value,
            kind,
            completion,
        });
    }
    interleave(&ops)
}

proptest! {
    #[test]
    fn serial_executions_are_always_valid(plan in plan()) {
        let events = serial_history(&plan);
        for model in [Model::SnapshotIsolation, Model::StrictSerializable] {
            let options = AppendOptions { model, ..AppendOptions::default() };
            let v = check(&events, &options).unwrap();
            prop_assert!(
                v.valid && v.anomalies.is_empty(),
                "{:?}: {:#?}",
                model,
                v.anomalies
            );
        }
    }

    #[test]
    fn arbitrary_histories_never_panic(events in arbitrary_events()) {
        for model in [Model::SnapshotIsolation, Model::StrictSerializable] {
            let options = AppendOptions { model, ..AppendOptions::default() };
            let _ = check(&events, &options);
        }
    }
}

fn arbitrary_events() -> impl Strategy<Value = Vec<Event>> {
    let element = prop_oneof![
        Just(json!(null)),
        (0..4u64).prop_map(|x| json!(x)),
        Just(json!(-1)),
        Just(json!("x")),
    ];
    let list = prop::collection::vec(element.clone(), 0..4).prop_map(Value::Array);
    let mop = (
        prop_oneof![Just("r"), Just("append"), Just("q")],
        element.clone(),
        prop_oneof![element, list],
    )
        .prop_map(|(f, k, v)| json!([f, k, v]));
    let value = prop_oneof![
        prop::collection::vec(mop, 0..4).prop_map(Value::Array),
        Just(json!({})),
    ];
    let kind = prop_oneof![
        3 => Just(EventType::Invoke),
        2 => Just(EventType::Ok),
        1 => Just(EventType::Fail),
        1 => Just(EventType::Info),
    ];
    prop::collection::vec(
        (
            kind,
            0..3u64,
            0..100u64,
            prop_oneof![Just("txn"), Just("x")],
            value,
        ),
        0..30,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .map(|(kind, process, time_ns, f, value)| Event {
                kind,
                process,
                node: "n1".into(),
                time_ns,
                f: f.into(),
                value,
                error: None,
            })
            .collect()
    })
}

// ---- scale ----

/// A broken database: each transaction reads a random stale snapshot and
/// its appends land on the latest state (no first-committer-wins), so lost
/// updates and G-single cycles abound and the graph has large SCCs.
#[test]
fn a_large_anomalous_history_is_checked_quickly() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let keys = 10usize;
    // lists only grow, so a snapshot is each key's length at some commit
    let mut latest: Vec<Vec<u64>> = vec![Vec::new(); keys];
    let mut lengths: Vec<Vec<usize>> = vec![vec![0; keys]];
    let mut next = 0u64;
    let mut h = H::default();
    for i in 0..20_000u64 {
        let lag = rand(6) as usize;
        let snapshot = lengths[lengths.len().saturating_sub(1 + lag)].clone();
        let mut own: Vec<Vec<u64>> = vec![Vec::new(); keys];
        let mut mops = Vec::new();
        for _ in 0..1 + rand(4) {
            let key = rand(keys as u64) as usize;
            if rand(2) == 0 {
                let mut seen = latest[key][..snapshot[key]].to_vec();
                seen.extend_from_slice(&own[key]);
                mops.push(json!(["r", key, seen]));
            } else {
                next += 1;
                own[key].push(next);
                latest[key].push(next);
                mops.push(json!(["append", key, next]));
            }
        }
        lengths.push(latest.iter().map(Vec::len).collect());
        h.txn(i % 10, Value::Array(mops));
    }
    let started = std::time::Instant::now();
    let v = h.check(Model::StrictSerializable);
    let took = started.elapsed();
    assert!(!v.valid);
    assert!(v.has(AnomalyKind::LostUpdate));
    assert!(v.has(AnomalyKind::GSingle));
    assert!(!v.has(AnomalyKind::CycleSearchIncomplete));
    assert!(took.as_secs() < 60, "took {took:?}");
}
