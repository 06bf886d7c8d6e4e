//! The set workload's checker.
//!
//! Owns the JSON shapes of set operations and the rules for what a set may
//! show: every element whose add was acknowledged (or that some read already
//! showed) is in every node's final read; no read shows an element nobody
//! tried to add (`unexpected`) or whose add definitely failed (`phantom`);
//! an element whose add is indeterminate may or may not appear (those that
//! do are counted as `recovered`). Pure logic over a history in memory.
//!
//! Must not touch: databases, files, or how the client adds and reads (only
//! the value shapes below are shared with it).
//!
//! # Value shapes
//!
//! - `f = "add"`: the element, a non-negative integer, unique in the test.
//! - `f = "read"`: `null` at invocation; at `ok`, the list of all elements
//!   the node holds (order does not matter; `null` means none).
//!
//! A node's *final read* is its `ok` read that completed last. It must hold
//! every element whose add completed `ok` before the read was invoked, and
//! every element some read had already returned by then. Reads other than
//! the final ones are checked for unexpected, phantom and duplicate elements
//! only. A node that was asked to read but never answered gets a
//! `no-final-read` anomaly, and so does a history with no read at all: the
//! final state is unknown, which is not a pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::history::Event;
use crate::op::{self, Op, Outcome};
use crate::verdict::{Anomaly, AnomalyKind, CheckError, OpEvidence, Verdict};

/// The operation names of the set workload.
pub const ADD: &str = "add";
pub const READ: &str = "read";

/// At most this many add operations are attached as evidence to one
/// anomaly; the details list every element.
const EVIDENCE_LIMIT: usize = 20;

/// Parse an `ok` read.
pub fn parse_read(v: &Value) -> Result<Vec<u64>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|x| {
                x.as_u64()
                    .ok_or_else(|| format!("element {x} is not a non-negative integer"))
            })
            .collect(),
        other => Err(format!("read {other} is not a list of elements")),
    }
}

/// Check a set history. Operations other than `add` and `read` are ignored
/// (and counted as `ignored-ops`).
pub fn check(history: &[Event]) -> Result<Verdict, CheckError> {
    let mut verdict = Verdict::new("set");
    let ops = op::pair(history)?;

    // element -> its add
    let mut adds: HashMap<u64, Op<'_>> = HashMap::new();
    // ok reads with their elements, in completion order
    let mut reads: Vec<(Op<'_>, Vec<u64>)> = Vec::new();
    // nodes asked to read
    let mut read_nodes: BTreeSet<&str> = BTreeSet::new();
    for op in ops {
        match op.f() {
            ADD => {
                let element = op
                    .invoke
                    .value
                    .as_u64()
                    .ok_or_else(|| CheckError::BadValue {
                        index: op.index,
                        f: ADD.into(),
                        reason: format!(
                            "element {} is not a non-negative integer",
                            op.invoke.value
                        ),
                    })?;
                verdict.count(
                    match op.outcome() {
                        Outcome::Ok => "ok-adds",
                        Outcome::Fail => "failed-adds",
                        Outcome::Info => "indeterminate-adds",
                    },
                    1,
                );
                if let Some(first) = adds.insert(element, op) {
                    return Err(CheckError::DuplicateWrite {
                        key: "the set".into(),
                        value: element.to_string(),
                        first: first.index,
                        second: op.index,
                    });
                }
            }
            READ => {
                read_nodes.insert(&op.invoke.node);
                if op.outcome() == Outcome::Ok {
                    let elements =
                        parse_read(op.value()).map_err(|reason| CheckError::BadValue {
                            index: op.completion_index.unwrap_or(op.index),
                            f: READ.into(),
                            reason,
                        })?;
                    reads.push((op, elements));
                }
            }
            _ => verdict.count("ignored-ops", 1),
        }
    }
    reads.sort_by_key(|(op, _)| (op.complete_time(), op.completion_index));
    verdict.count("ok-reads", reads.len() as u64);

    // every read: duplicates, unexpected and phantom elements
    for (read, elements) in &reads {
        check_elements(read, elements, &adds, &mut verdict);
    }

    // final reads: the last ok read of each node
    let mut finals: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (read, _)) in reads.iter().enumerate() {
        finals.insert(&read.invoke.node, i);
    }
    if reads.is_empty() {
        verdict.push(Anomaly {
            kind: AnomalyKind::NoFinalRead,
            violation: true,
            explanation: "no read succeeded, so no node's final state is known".into(),
            ops: Vec::new(),
            cycle: Vec::new(),
            details: Value::Null,
        });
    }
    for node in &read_nodes {
        if !finals.contains_key(node) && !reads.is_empty() {
            verdict.push(Anomaly {
                kind: AnomalyKind::NoFinalRead,
                violation: true,
                explanation: format!("node {node} never answered a read"),
                ops: Vec::new(),
                cycle: Vec::new(),
                details: json!({"node": node}),
            });
        }
    }
    verdict.count("final-reads", finals.len() as u64);

    // when each element was first known to be in the set: its add's ok, or
    // the first read that returned it
    let mut known_at: HashMap<u64, u64> = HashMap::new();
    for (element, add) in &adds {
        if add.outcome() == Outcome::Ok
            && let Some(t) = add.complete_time()
        {
            known_at.insert(*element, t);
        }
    }
    for (read, elements) in &reads {
        let Some(t) = read.complete_time() else {
            continue;
        };
        for e in elements {
            if adds.get(e).is_some_and(|a| a.outcome() != Outcome::Fail) {
                let at = known_at.entry(*e).or_insert(t);
                *at = (*at).min(t);
            }
        }
    }

    let mut recovered: BTreeSet<u64> = BTreeSet::new();
    let mut lost_anywhere: BTreeSet<u64> = BTreeSet::new();
    for (node, &i) in &finals {
        let (read, elements) = &reads[i];
        let present: BTreeSet<u64> = elements.iter().copied().collect();
        recovered.extend(
            present
                .iter()
                .filter(|e| adds.get(e).is_some_and(|a| a.outcome() == Outcome::Info)),
        );
        let mut lost: Vec<u64> = known_at
            .iter()
            .filter(|(e, t)| **t < read.invoke_time() && !present.contains(e))
            .map(|(e, _)| *e)
            .collect();
        if lost.is_empty() {
            continue;
        }
        lost.sort_unstable();
        lost_anywhere.extend(&lost);
        let unacknowledged = lost
            .iter()
            .filter(|e| adds.get(e).is_some_and(|a| a.outcome() != Outcome::Ok))
            .count();
        let mut explanation = format!(
            "the final read on {node}, {}, lacks {} element(s) known to be in the set \
             before it began: {}",
            read.label(),
            lost.len(),
            fmt_elements(&lost)
        );
        if unacknowledged > 0 {
            explanation.push_str(&format!(
                " ({unacknowledged} of them from indeterminate adds that an earlier read showed)"
            ));
        }
        let evidence = with_adds(read, &lost, &adds);
        verdict.push(Anomaly {
            kind: AnomalyKind::Lost,
            violation: true,
            explanation,
            ops: evidence,
            cycle: Vec::new(),
            details: json!({"node": node, "lost": lost}),
        });
    }
    verdict.count("recovered", recovered.len() as u64);
    verdict.count("lost", lost_anywhere.len() as u64);
    let never_seen = adds
        .values()
        .filter(|a| a.outcome() == Outcome::Info)
        .count()
        .saturating_sub(recovered.len());
    verdict.count("indeterminate-not-recovered", never_seen as u64);
    Ok(verdict)
}

fn check_elements(
    read: &Op<'_>,
    elements: &[u64],
    adds: &HashMap<u64, Op<'_>>,
    verdict: &mut Verdict,
) {
    let mut seen = BTreeSet::new();
    let mut dups = BTreeSet::new();
    let mut unexpected = BTreeSet::new();
    let mut phantom = BTreeSet::new();
    for &e in elements {
        if !seen.insert(e) {
            dups.insert(e);
        }
        match adds.get(&e).map(|a| a.outcome()) {
            None => {
                unexpected.insert(e);
            }
            Some(Outcome::Fail) => {
                phantom.insert(e);
            }
            _ => {}
        }
    }
    let node = &read.invoke.node;
    for (kind, set, what) in [
        (AnomalyKind::DuplicateElements, dups, "more than once"),
        (
            AnomalyKind::Unexpected,
            unexpected,
            "that no client ever tried to add",
        ),
        (AnomalyKind::Phantom, phantom, "whose add definitely failed"),
    ] {
        if set.is_empty() {
            continue;
        }
        let list: Vec<u64> = set.into_iter().collect();
        verdict.push(Anomaly {
            kind,
            violation: true,
            explanation: format!(
                "{} on {node} returned {} element(s) {what}: {}",
                read.label(),
                list.len(),
                fmt_elements(&list)
            ),
            ops: with_adds(read, &list, adds),
            cycle: Vec::new(),
            details: json!({"node": node, "elements": list}),
        });
    }
}

/// The read, then the adds of (the first few of) the elements.
fn with_adds(read: &Op<'_>, elements: &[u64], adds: &HashMap<u64, Op<'_>>) -> Vec<OpEvidence> {
    std::iter::once(read.evidence())
        .chain(
            elements
                .iter()
                .filter_map(|e| adds.get(e))
                .take(EVIDENCE_LIMIT)
                .map(Op::evidence),
        )
        .collect()
}

fn fmt_elements(elements: &[u64]) -> String {
    const SHOWN: usize = 10;
    let head: Vec<String> = elements.iter().take(SHOWN).map(u64::to_string).collect();
    if elements.len() > SHOWN {
        format!("[{}, …]", head.join(", "))
    } else {
        format!("[{}]", head.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventType;
    use crate::op::testing::{HistoryBuilder, Planned, interleave};
    use proptest::prelude::*;

    fn add(h: &mut HistoryBuilder, p: u64, kind: EventType, e: u64) -> usize {
        let id = h.invoke(p, ADD, json!(e));
        h.complete(kind, p, ADD, json!(e));
        id
    }

    fn read_on(h: &mut HistoryBuilder, node: &str, p: u64, elements: Value) -> usize {
        let id = h.push(EventType::Invoke, p, node, READ, Value::Null);
        h.push(EventType::Ok, p, node, READ, elements);
        id
    }

    fn finals(h: &mut HistoryBuilder, elements: Value) -> Vec<usize> {
        ["n1", "n2", "n3"]
            .iter()
            .enumerate()
            .map(|(i, node)| read_on(h, node, 10 + i as u64, elements.clone()))
            .collect()
    }

    fn kinds(v: &Verdict) -> Vec<AnomalyKind> {
        v.anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_clean_history_with_every_outcome_is_valid() {
        let mut h = HistoryBuilder::default();
        add(&mut h, 1, EventType::Ok, 1);
        add(&mut h, 2, EventType::Fail, 2);
        add(&mut h, 3, EventType::Info, 3); // recovered
        add(&mut h, 4, EventType::Info, 4); // not
        h.invoke(5, ADD, json!(5)); // never completed, recovered
        read_on(&mut h, "n1", 1, json!([1])); // an early read
        h.invoke(6, READ, Value::Null);
        h.complete(EventType::Fail, 6, READ, Value::Null);
        finals(&mut h, json!([5, 3, 1]));
        let v = check(&h.events).unwrap();
        assert!(v.valid && v.anomalies.is_empty(), "{:#?}", v.anomalies);
        assert_eq!(v.counts["recovered"], 2);
        assert_eq!(v.counts["indeterminate-not-recovered"], 1);
        assert_eq!(v.counts["final-reads"], 3);
        assert_eq!(v.counts["ok-adds"], 1);
        assert_eq!(v.counts["failed-adds"], 1);
        assert_eq!(v.counts["indeterminate-adds"], 3);
    }

    #[test]
    fn lost_an_acknowledged_add_missing_from_one_node() {
        let mut h = HistoryBuilder::default();
        let a1 = add(&mut h, 1, EventType::Ok, 1);
        add(&mut h, 1, EventType::Ok, 2);
        read_on(&mut h, "n1", 11, json!([1, 2]));
        let bad = read_on(&mut h, "n2", 12, json!([2]));
        read_on(&mut h, "n3", 13, json!([2, 1]));
        let v = check(&h.events).unwrap();
        assert!(!v.valid);
        assert_eq!(kinds(&v), vec![AnomalyKind::Lost]);
        let lost = &v.anomalies[0];
        assert_eq!(lost.details, json!({"node": "n2", "lost": [1]}));
        let ids: Vec<usize> = lost.ops.iter().map(|o| o.index).collect();
        assert_eq!(ids, vec![bad, a1]);
        assert_eq!(v.counts["lost"], 1);
    }

    #[test]
    fn lost_an_indeterminate_add_that_a_read_showed_then_vanished() {
        let mut h = HistoryBuilder::default();
        add(&mut h, 1, EventType::Info, 7);
        read_on(&mut h, "n1", 11, json!([7]));
        read_on(&mut h, "n1", 11, json!([]));
        let v = check(&h.events).unwrap();
        assert_eq!(kinds(&v), vec![AnomalyKind::Lost]);
        assert!(v.anomalies[0].explanation.contains("indeterminate"));
    }

    #[test]
    fn an_add_concurrent_with_the_final_read_need_not_be_in_it() {
        let mut h = HistoryBuilder::default();
        h.push(EventType::Invoke, 11, "n1", READ, Value::Null);
        add(&mut h, 1, EventType::Ok, 1);
        h.push(EventType::Ok, 11, "n1", READ, json!([]));
        assert!(check(&h.events).unwrap().valid);
    }

    #[test]
    fn unexpected_an_element_nobody_added() {
        let mut h = HistoryBuilder::default();
        add(&mut h, 1, EventType::Ok, 1);
        let ids = finals(&mut h, json!([1, 99]));
        let v = check(&h.events).unwrap();
        assert_eq!(kinds(&v), vec![AnomalyKind::Unexpected; 3]);
        assert_eq!(v.anomalies[0].ops[0].index, ids[0]);
        assert_eq!(v.anomalies[0].details["elements"], json!([99]));
    }

    #[test]
    fn phantom_an_element_whose_add_failed() {
        let mut h = HistoryBuilder::default();
        let failed = add(&mut h, 1, EventType::Fail, 5);
        let r = read_on(&mut h, "n1", 11, json!([5]));
        let v = check(&h.events).unwrap();
        assert_eq!(kinds(&v), vec![AnomalyKind::Phantom]);
        let ids: Vec<usize> = v.anomalies[0].ops.iter().map(|o| o.index).collect();
        assert_eq!(ids, vec![r, failed]);
        assert_eq!(v.anomalies[0].ops[1].event.kind, EventType::Fail);
    }

    #[test]
    fn duplicate_elements_in_a_read() {
        let mut h = HistoryBuilder::default();
        add(&mut h, 1, EventType::Ok, 1);
        read_on(&mut h, "n1", 11, json!([1, 1]));
        let v = check(&h.events).unwrap();
        assert_eq!(kinds(&v), vec![AnomalyKind::DuplicateElements]);
    }

    #[test]
    fn no_final_read_is_not_a_pass() {
        let mut h = HistoryBuilder::default();
        add(&mut h, 1, EventType::Ok, 1);
        let v = check(&h.events).unwrap();
        assert!(!v.valid);
        assert_eq!(kinds(&v), vec![AnomalyKind::NoFinalRead]);

        read_on(&mut h, "n1", 11, json!([1]));
        h.push(EventType::Invoke, 12, "n2", READ, Value::Null);
        h.push(EventType::Info, 12, "n2", READ, Value::Null);
        let v = check(&h.events).unwrap();
        assert_eq!(kinds(&v), vec![AnomalyKind::NoFinalRead]);
        assert_eq!(v.anomalies[0].details["node"], "n2");
    }

    #[test]
    fn malformed_histories_are_errors() {
        let mut h = HistoryBuilder::default();
        add(&mut h, 1, EventType::Ok, 1);
        add(&mut h, 2, EventType::Ok, 1);
        assert!(matches!(
            check(&h.events),
            Err(CheckError::DuplicateWrite {
                first: 0,
                second: 2,
                ..
            })
        ));
        let mut h = HistoryBuilder::default();
        h.invoke(1, ADD, json!("x"));
        assert!(matches!(check(&h.events), Err(CheckError::BadValue { .. })));
        let mut h = HistoryBuilder::default();
        read_on(&mut h, "n1", 1, json!({"a": 1}));
        assert!(matches!(
            check(&h.events),
            Err(CheckError::BadValue { index: 1, .. })
        ));
    }

    /// (is a read?, outcome selector, before, after) per operation.
    type Plan = Vec<(bool, u8, u64, u64)>;

    fn serial_set_history(plan: &Plan) -> Vec<Event> {
        let mut set: BTreeSet<u64> = BTreeSet::new();
        let mut ops = Vec::new();
        let mut end = 0;
        for (i, &(is_read, outcome, before, after)) in plan.iter().enumerate() {
            let point = 1_000 + 300 * i as u64;
            let (invoke, complete) = (point - before, point + after);
            end = end.max(complete);
            if is_read {
                ops.push(Planned {
                    invoke,
                    complete,
                    f: READ,
                    asked: Value::Null,
                    kind: EventType::Ok,
                    completion: json!(set),
                });
                continue;
            }
            let e = i as u64;
            let (kind, applied) = match outcome {
                0..14 => (EventType::Ok, true),
                14..17 => (EventType::Fail, false),
                17..19 => (EventType::Info, true),
                _ => (EventType::Info, false),
            };
            if applied {
                set.insert(e);
            }
            ops.push(Planned {
                invoke,
                complete,
                f: ADD,
                asked: json!(e),
                kind,
                completion: json!(e),
            });
        }
        let mut events = interleave(&ops);
        // final reads, one per node, after everything
        for (i, node) in ["n1", "n2", "n3"].iter().enumerate() {
            let process = 1_000 + i as u64;
            for (kind, t, value) in [
                (EventType::Invoke, end + 10, Value::Null),
                (EventType::Ok, end + 20, json!(set)),
            ] {
                events.push(Event {
                    kind,
                    process,
                    node: node.to_string(),
                    time_ns: t,
                    f: READ.into(),
                    value,
                    error: None,
                });
            }
        }
        events
    }

    proptest! {
        #[test]
        fn serial_executions_are_always_valid(
            plan in prop::collection::vec(
                (prop::bool::weighted(0.2), 0..20u8, 0..250u64, 0..250u64),
                0..80,
            )
        ) {
            let events = serial_set_history(&plan);
            let v = check(&events).unwrap();
            prop_assert!(v.valid && v.anomalies.is_empty(), "{:#?}", v.anomalies);
        }

        #[test]
        fn arbitrary_values_never_panic(
            raw in prop::collection::vec(
                (0..4u8, 0..3u64, prop::bool::ANY, prop_oneof![
                    Just(json!(null)),
                    (0..5u64).prop_map(|x| json!(x)),
                    Just(json!([1, 2, 2])),
                    Just(json!([1, "x"])),
                    Just(json!({})),
                ]),
                0..20,
            )
        ) {
            let events: Vec<_> = raw
                .into_iter()
                .enumerate()
                .map(|(i, (kind, process, is_read, value))| Event {
                    kind: [EventType::Invoke, EventType::Ok, EventType::Fail, EventType::Info]
                        [kind as usize],
                    process,
                    node: format!("n{process}"),
                    time_ns: i as u64,
                    f: if is_read { READ } else { ADD }.into(),
                    value,
                    error: None,
                })
                .collect();
            let _ = check(&events);
        }
    }
}
