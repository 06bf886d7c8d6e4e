//! Verdicts: what a checker concluded about a history, and why.
//!
//! Owns the report types every checker returns ([`Verdict`], [`Anomaly`],
//! [`AnomalyKind`], [`CycleStep`], [`OpEvidence`]) and the error a checker
//! returns when the history itself is malformed ([`CheckError`]). Everything
//! here serializes to JSON so the harness can write `verdict.json` and the
//! report can list the transactions involved.
//!
//! Must not touch: histories on disk, databases, or any workload's logic. A
//! checker decides *whether* something is an anomaly; this module only says
//! how it is written down.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::Event;

/// The kinds of anomaly the checkers report. The JSON names follow Elle and
/// Jepsen where an established name exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnomalyKind {
    // ---- list-append: cycles in the dependency graph (Adya's phenomena) ----
    /// A cycle of write-write dependencies only.
    #[serde(rename = "G0")]
    G0,
    /// A cycle of write-write and write-read dependencies, at least one wr.
    #[serde(rename = "G1c")]
    G1c,
    /// A cycle with exactly one read-write anti-dependency.
    #[serde(rename = "G-single")]
    GSingle,
    /// A cycle with two or more read-write anti-dependencies.
    #[serde(rename = "G2-item")]
    G2Item,
    /// [`AnomalyKind::G0`] that needs a process-order edge.
    #[serde(rename = "G0-process")]
    G0Process,
    /// [`AnomalyKind::G1c`] that needs a process-order edge.
    #[serde(rename = "G1c-process")]
    G1cProcess,
    /// [`AnomalyKind::GSingle`] that needs a process-order edge.
    #[serde(rename = "G-single-process")]
    GSingleProcess,
    /// [`AnomalyKind::G2Item`] that needs a process-order edge.
    #[serde(rename = "G2-item-process")]
    G2ItemProcess,
    /// [`AnomalyKind::G0`] that needs a real-time edge.
    #[serde(rename = "G0-realtime")]
    G0Realtime,
    /// [`AnomalyKind::G1c`] that needs a real-time edge.
    #[serde(rename = "G1c-realtime")]
    G1cRealtime,
    /// [`AnomalyKind::GSingle`] that needs a real-time edge.
    #[serde(rename = "G-single-realtime")]
    GSingleRealtime,
    /// [`AnomalyKind::G2Item`] that needs a real-time edge.
    #[serde(rename = "G2-item-realtime")]
    G2ItemRealtime,
    // ---- list-append: anomalies found without the graph ----
    /// Aborted read: a read observed a value whose append definitely failed.
    #[serde(rename = "G1a")]
    G1a,
    /// Intermediate read: a read observed an append that was not its
    /// transaction's last append to that key.
    #[serde(rename = "G1b")]
    G1b,
    /// Two committed transactions read the same version of a key and both
    /// appended to it.
    #[serde(rename = "lost-update")]
    LostUpdate,
    /// A transaction's read did not reflect its own earlier reads and appends.
    #[serde(rename = "internal")]
    Internal,
    /// Two reads of one key where neither is a prefix of the other.
    #[serde(rename = "incompatible-order")]
    IncompatibleOrder,
    /// A read returned the same element more than once.
    #[serde(rename = "duplicate-elements")]
    DuplicateElements,
    /// A read returned a value nobody ever appended or added.
    #[serde(rename = "garbage-read")]
    GarbageRead,
    /// The cycle search ran out of its budget: the graph may hide cycles
    /// that were not looked for, so the history is not proven valid.
    #[serde(rename = "cycle-search-incomplete")]
    CycleSearchIncomplete,
    // ---- bank ----
    /// A read of all balances whose sum is not the constant total.
    #[serde(rename = "wrong-total")]
    WrongTotal,
    /// A read showed a negative balance.
    #[serde(rename = "negative-balance")]
    NegativeBalance,
    /// A read lacked an account's balance (missing or null).
    #[serde(rename = "missing-balance")]
    MissingBalance,
    /// A read showed an account that does not exist.
    #[serde(rename = "unexpected-account")]
    UnexpectedAccount,
    // ---- set ----
    /// An acknowledged (or observed) element missing from a final read.
    #[serde(rename = "lost")]
    Lost,
    /// An element in a read that no client ever tried to add.
    #[serde(rename = "unexpected")]
    Unexpected,
    /// An element in a read whose add definitely failed.
    #[serde(rename = "phantom")]
    Phantom,
    /// A node never answered a read, so its final state is unknown.
    #[serde(rename = "no-final-read")]
    NoFinalRead,
}

impl AnomalyKind {
    /// The name used in JSON and in reports.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::G0 => "G0",
            AnomalyKind::G1c => "G1c",
            AnomalyKind::GSingle => "G-single",
            AnomalyKind::G2Item => "G2-item",
            AnomalyKind::G0Process => "G0-process",
            AnomalyKind::G1cProcess => "G1c-process",
            AnomalyKind::GSingleProcess => "G-single-process",
            AnomalyKind::G2ItemProcess => "G2-item-process",
            AnomalyKind::G0Realtime => "G0-realtime",
            AnomalyKind::G1cRealtime => "G1c-realtime",
            AnomalyKind::GSingleRealtime => "G-single-realtime",
            AnomalyKind::G2ItemRealtime => "G2-item-realtime",
            AnomalyKind::G1a => "G1a",
            AnomalyKind::G1b => "G1b",
            AnomalyKind::LostUpdate => "lost-update",
            AnomalyKind::Internal => "internal",
            AnomalyKind::IncompatibleOrder => "incompatible-order",
            AnomalyKind::DuplicateElements => "duplicate-elements",
            AnomalyKind::GarbageRead => "garbage-read",
            AnomalyKind::CycleSearchIncomplete => "cycle-search-incomplete",
            AnomalyKind::WrongTotal => "wrong-total",
            AnomalyKind::NegativeBalance => "negative-balance",
            AnomalyKind::MissingBalance => "missing-balance",
            AnomalyKind::UnexpectedAccount => "unexpected-account",
            AnomalyKind::Lost => "lost",
            AnomalyKind::Unexpected => "unexpected",
            AnomalyKind::Phantom => "phantom",
            AnomalyKind::NoFinalRead => "no-final-read",
        }
    }
}

impl std::fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One operation named as evidence: the event that tells what happened to it
/// (its completion, or its invocation if it never completed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpEvidence {
    /// The operation's id: the 0-based position of its `invoke` event in the
    /// history. Cycle steps refer to operations by this id.
    pub index: usize,
    /// When the operation was invoked (its completion time is in `event`).
    pub invoke_time_ns: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// The kinds of edge in a transaction dependency graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// Write-write: `to` appended after `from` to the same key.
    Ww,
    /// Write-read: `to` read the version `from` appended.
    Wr,
    /// Read-write (anti-dependency): `from` read a version that `to`'s
    /// append came after.
    Rw,
    /// Process order: the same client ran `from`, then `to`.
    Process,
    /// Real-time order: `from` completed before `to` was invoked.
    Realtime,
}

/// One edge of a cycle given as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleStep {
    /// Operation id (see [`OpEvidence::index`]).
    pub from: usize,
    /// Operation id (see [`OpEvidence::index`]).
    pub to: usize,
    pub edge: EdgeKind,
    /// Why the edge exists, in words (key and values involved).
    pub why: String,
}

/// One anomaly found in a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// Whether the consistency model being checked forbids it. Anomalies
    /// that are allowed are still reported, for information.
    pub violation: bool,
    /// A human explanation naming the operations, keys and values.
    pub explanation: String,
    /// The operations involved.
    pub ops: Vec<OpEvidence>,
    /// For cycle anomalies: the cycle, edge by edge, ending where it started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cycle: Vec<CycleStep>,
    /// Workload-specific structured details (elements, balances, …).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// What a checker concluded about a whole history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The workload checked (`append`, `bank`, `set`).
    pub workload: String,
    /// The consistency model checked against, where the workload has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// True iff no anomaly is a violation.
    pub valid: bool,
    pub anomalies: Vec<Anomaly>,
    /// Counters describing the history and the check (operations by
    /// outcome, recovered elements, graph size, …).
    pub counts: BTreeMap<String, u64>,
}

impl Verdict {
    /// An empty, valid verdict for a workload.
    pub fn new(workload: &str) -> Verdict {
        Verdict {
            workload: workload.to_string(),
            model: None,
            valid: true,
            anomalies: Vec::new(),
            counts: BTreeMap::new(),
        }
    }

    /// Record an anomaly; a violation makes the verdict invalid.
    pub fn push(&mut self, anomaly: Anomaly) {
        if anomaly.violation {
            self.valid = false;
        }
        self.anomalies.push(anomaly);
    }

    /// Add `n` to a counter.
    pub fn count(&mut self, name: &str, n: u64) {
        *self.counts.entry(name.to_string()).or_insert(0) += n;
    }

    /// The anomalies of one kind.
    pub fn of_kind(&self, kind: AnomalyKind) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(move |a| a.kind == kind)
    }

    /// Whether any anomaly of this kind was found.
    pub fn has(&self, kind: AnomalyKind) -> bool {
        self.of_kind(kind).next().is_some()
    }
}

/// Why a history could not be checked: it breaks the rules every history
/// follows, or a value does not have its workload's shape. A database
/// misbehaving is never an error; it is an [`Anomaly`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CheckError {
    #[error("event {index}: process {process} invoked an operation while one was still pending")]
    ProcessBusy { index: usize, process: u64 },
    #[error("event {index}: process {process} completed an operation it never invoked")]
    UnmatchedCompletion { index: usize, process: u64 },
    #[error(
        "event {index}: completion of `{got}` does not match the pending invocation of `{expected}`"
    )]
    MismatchedCompletion {
        index: usize,
        expected: String,
        got: String,
    },
    #[error("event {index}: malformed `{f}` value: {reason}")]
    BadValue {
        index: usize,
        f: String,
        reason: String,
    },
    #[error(
        "events {first} and {second} both write {value} to {key}, but written values must be unique"
    )]
    DuplicateWrite {
        key: String,
        value: String,
        first: usize,
        second: usize,
    },
    #[error("bad checker options: {0}")]
    Options(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventType;

    #[test]
    fn a_violation_makes_the_verdict_invalid_an_allowed_anomaly_does_not() {
        let mut v = Verdict::new("append");
        let anomaly = |kind, violation| Anomaly {
            kind,
            violation,
            explanation: String::new(),
            ops: vec![],
            cycle: vec![],
            details: serde_json::Value::Null,
        };
        v.push(anomaly(AnomalyKind::G2Item, false));
        assert!(v.valid);
        v.push(anomaly(AnomalyKind::GSingle, true));
        assert!(!v.valid);
        assert!(v.has(AnomalyKind::GSingle));
        assert!(!v.has(AnomalyKind::G0));
    }

    #[test]
    fn verdicts_serialize_with_jepsen_names_and_round_trip() {
        let mut v = Verdict::new("append");
        v.count("ok", 2);
        v.push(Anomaly {
            kind: AnomalyKind::GSingle,
            violation: true,
            explanation: "x".into(),
            ops: vec![OpEvidence {
                index: 3,
                invoke_time_ns: 7,
                event: Event {
                    kind: EventType::Ok,
                    process: 1,
                    node: "n1".into(),
                    time_ns: 9,
                    f: "txn".into(),
                    value: serde_json::json!([["r", 1, [1]]]),
                    error: None,
                },
            }],
            cycle: vec![CycleStep {
                from: 3,
                to: 3,
                edge: EdgeKind::Rw,
                why: "y".into(),
            }],
            details: serde_json::Value::Null,
        });
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["anomalies"][0]["kind"], "G-single");
        assert_eq!(json["anomalies"][0]["ops"][0]["type"], "ok");
        assert_eq!(json["anomalies"][0]["ops"][0]["index"], 3);
        assert_eq!(json["anomalies"][0]["cycle"][0]["edge"], "rw");
        assert!(json["anomalies"][0].get("details").is_none());
        let back: Verdict = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn kind_names_match_their_json() {
        for kind in [
            AnomalyKind::G0,
            AnomalyKind::G2ItemRealtime,
            AnomalyKind::LostUpdate,
            AnomalyKind::NoFinalRead,
            AnomalyKind::CycleSearchIncomplete,
        ] {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.name().into())
            );
        }
    }
}
