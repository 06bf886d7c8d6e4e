//! The list-append workload's checker, after Elle (Kingsbury & Alvaro,
//! "Elle: Inferring Isolation Anomalies from Experimental Observations",
//! VLDB 2020).
//!
//! Owns the JSON shape of list-append transactions, the inference of each
//! key's version order, the transaction dependency graph and the anomaly
//! classification against a [`Model`]. Pure logic: it reads a history
//! already in memory and returns a [`Verdict`].
//!
//! Must not touch: databases, files, clocks, or how the workload generates
//! transactions (only the value shape below is shared with it).
//!
//! # Value shape
//!
//! An operation with `f = "txn"` has as value a list of micro-operations:
//!
//! ```json
//! [["r", 3, null], ["append", 3, 17], ["r", 4, null]]
//! ```
//!
//! Keys and appended values are non-negative integers; an appended value is
//! unique per key across the whole history. At `invoke` (and in `fail` /
//! `info` completions) reads are `null`; at `ok` each read holds the list the
//! transaction saw, e.g. `["r", 3, [5, 9, 17]]` (`null` at `ok` means the key
//! did not exist: the empty list). Build values with [`txn_value`].
//!
//! # What is checked
//!
//! 1. Each read is checked on its own: no element twice
//!    (`duplicate-elements`), no element nobody appended (`garbage-read`), no
//!    element whose append failed (`G1a`), and within a transaction a read
//!    reflects the transaction's earlier reads and appends (`internal`).
//! 2. A key's version order is its longest read; every other read must be a
//!    prefix of it (`incompatible-order`).
//! 3. A read by another transaction that ends on a transaction's non-final
//!    append to that key is an intermediate read (`G1b`).
//! 4. Two committed transactions that read the same version of a key and
//!    both append to it are a `lost-update`.
//! 5. The committed transactions (`ok`, and `info` ones whose appends were
//!    read: they must have committed) form a graph: `ww` between successive
//!    appenders of a key, `wr` from the appender of the version a read ended
//!    on to the reader, `rw` from a reader to the appender of the next
//!    version, plus process-order and real-time edges when the model asks for
//!    them. Tarjan's SCCs restrict the search; inside each SCC a breadth-first
//!    search finds a shortest cycle of each class (`G0`, `G1c`, `G-single`,
//!    `G2-item`, and `-process` / `-realtime` variants).
//!
//! Indeterminate transactions are never an anomaly by themselves: unobserved
//! ones are left out of the graph, and their reads are unknown.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::graph::{Graph, Mask, Step};
use crate::history::Event;
use crate::op::{self, Op, Outcome};
use crate::verdict::{Anomaly, AnomalyKind, CheckError, CycleStep, EdgeKind, Verdict};

/// The operation name of list-append transactions.
pub const TXN: &str = "txn";

/// One micro-operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mop {
    /// Read a key's list; `None` until the read has completed.
    Read { key: u64, value: Option<Vec<u64>> },
    /// Append a value to a key's list.
    Append { key: u64, value: u64 },
}

impl Mop {
    pub fn key(&self) -> u64 {
        match self {
            Mop::Read { key, .. } | Mop::Append { key, .. } => *key,
        }
    }

    /// The JSON form: `["r", key, null|[...]]` or `["append", key, value]`.
    pub fn to_json(&self) -> Value {
        match self {
            Mop::Read { key, value } => json!(["r", key, value]),
            Mop::Append { key, value } => json!(["append", key, value]),
        }
    }

    /// Parse the JSON form.
    pub fn from_json(v: &Value) -> Result<Mop, String> {
        let parts = v
            .as_array()
            .filter(|a| a.len() == 3)
            .ok_or_else(|| format!("micro-op {v} is not [f, key, value]"))?;
        let key = parts[1]
            .as_u64()
            .ok_or_else(|| format!("micro-op {v}: key is not a non-negative integer"))?;
        match parts[0].as_str() {
            Some("r") => {
                let value = match &parts[2] {
                    Value::Null => None,
                    Value::Array(items) => Some(
                        items
                            .iter()
                            .map(|x| {
                                x.as_u64().ok_or_else(|| {
                                    format!("micro-op {v}: read element {x} is not an integer")
                                })
                            })
                            .collect::<Result<Vec<u64>, String>>()?,
                    ),
                    other => return Err(format!("micro-op {v}: read value {other} is not a list")),
                };
                Ok(Mop::Read { key, value })
            }
            Some("append") => {
                let value = parts[2].as_u64().ok_or_else(|| {
                    format!("micro-op {v}: appended value is not a non-negative integer")
                })?;
                Ok(Mop::Append { key, value })
            }
            _ => Err(format!("micro-op {v}: unknown function {}", parts[0])),
        }
    }
}

/// The value of a `txn` operation.
pub fn txn_value(mops: &[Mop]) -> Value {
    Value::Array(mops.iter().map(Mop::to_json).collect())
}

/// Parse the value of a `txn` operation.
pub fn parse_txn(v: &Value) -> Result<Vec<Mop>, String> {
    v.as_array()
        .ok_or_else(|| format!("transaction {v} is not a list of micro-ops"))?
        .iter()
        .map(Mop::from_json)
        .collect()
}

/// The consistency model a history is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// Snapshot isolation: forbids G0, G1a, G1b, G1c, G-single and lost
    /// update; G2-item is allowed (reported for information).
    #[default]
    SnapshotIsolation,
    /// Snapshot isolation plus each client seeing its own past: cycles that
    /// need process-order edges are violations too.
    StrongSessionSnapshotIsolation,
    /// Snapshot isolation plus real time: a transaction sees everything that
    /// committed before it began.
    StrongSnapshotIsolation,
    /// Serializability: G2-item is forbidden as well.
    Serializable,
    /// Serializability plus real time.
    StrictSerializable,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::SnapshotIsolation => "snapshot-isolation",
            Model::StrongSessionSnapshotIsolation => "strong-session-snapshot-isolation",
            Model::StrongSnapshotIsolation => "strong-snapshot-isolation",
            Model::Serializable => "serializable",
            Model::StrictSerializable => "strict-serializable",
        }
    }

    /// The order edges (process, real-time) this model adds to the graph.
    fn order_edges(self) -> Mask {
        match self {
            Model::SnapshotIsolation | Model::Serializable => 0,
            Model::StrongSessionSnapshotIsolation => PROCESS,
            Model::StrongSnapshotIsolation | Model::StrictSerializable => PROCESS | REALTIME,
        }
    }

    /// Whether the model forbids an anomaly of this kind.
    pub fn forbids(self, kind: AnomalyKind) -> bool {
        use AnomalyKind::*;
        let serializable = matches!(self, Model::Serializable | Model::StrictSerializable);
        match kind {
            G2Item | G2ItemProcess | G2ItemRealtime => serializable,
            _ => true,
        }
    }
}

impl FromStr for Model {
    type Err = CheckError;

    fn from_str(s: &str) -> Result<Model, CheckError> {
        [
            Model::SnapshotIsolation,
            Model::StrongSessionSnapshotIsolation,
            Model::StrongSnapshotIsolation,
            Model::Serializable,
            Model::StrictSerializable,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| CheckError::Options(format!("unknown consistency model `{s}`")))
    }
}

/// How to check a list-append history.
#[derive(Debug, Clone)]
pub struct AppendOptions {
    pub model: Model,
    /// Edges the cycle search may look at, per anomaly class, before it
    /// gives up and reports `cycle-search-incomplete`.
    pub search_budget: u64,
}

impl Default for AppendOptions {
    fn default() -> Self {
        AppendOptions {
            model: Model::default(),
            search_budget: 50_000_000,
        }
    }
}

// Edge-type bits of the dependency graph.
const WW: Mask = 1;
const WR: Mask = 2;
const RW: Mask = 4;
const PROCESS: Mask = 8;
const REALTIME: Mask = 16;
const ORDER: Mask = PROCESS | REALTIME;

fn edge_kind(bit: Mask) -> EdgeKind {
    match bit {
        WW => EdgeKind::Ww,
        WR => EdgeKind::Wr,
        RW => EdgeKind::Rw,
        PROCESS => EdgeKind::Process,
        _ => EdgeKind::Realtime,
    }
}

fn edge_name(bit: Mask) -> &'static str {
    match bit {
        WW => "ww",
        WR => "wr",
        RW => "rw",
        PROCESS => "process",
        _ => "realtime",
    }
}

/// A parsed `txn` operation.
struct Txn<'a> {
    op: Op<'a>,
    outcome: Outcome,
    /// Reads are `Some` for `ok` transactions, `None` otherwise.
    mops: Vec<Mop>,
}

impl Txn<'_> {
    fn read(&self, mop: usize) -> &[u64] {
        match self.mops.get(mop) {
            Some(Mop::Read {
                value: Some(list), ..
            }) => list,
            _ => &[],
        }
    }
}

/// Who appended a value to a key.
#[derive(Clone, Copy)]
struct Writer {
    txn: usize,
    /// Whether it is the transaction's last append to that key.
    last: bool,
}

/// One read of one key by an `ok` transaction.
#[derive(Clone, Copy)]
struct ReadRef {
    txn: usize,
    mop: usize,
    key: u64,
    /// Made before the transaction's own appends to the key.
    external: bool,
}

/// Something wrong with one element of a read.
#[derive(Clone, Copy)]
enum Problem {
    /// Appears earlier in the same read.
    Duplicate(u64),
    /// Nobody appended it.
    Garbage(u64),
    /// Appended by this transaction, which failed.
    Aborted(usize, u64),
}

/// Why an edge exists; rendered into words only for the edges of a cycle.
#[derive(Clone, Copy)]
enum Why {
    Ww {
        key: u64,
        from: u64,
        to: u64,
    },
    Wr {
        key: u64,
        value: u64,
    },
    Rw {
        key: u64,
        last: Option<u64>,
        next: u64,
    },
    Process,
    Realtime {
        completed: u64,
        invoked: u64,
    },
}

/// The anomaly classes looked for as cycles.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    G0,
    G1c,
    GSingle,
    G2Item,
}

impl Class {
    fn kind(self, order: Mask) -> AnomalyKind {
        use AnomalyKind as K;
        match (self, order) {
            (Class::G0, 0) => K::G0,
            (Class::G1c, 0) => K::G1c,
            (Class::GSingle, 0) => K::GSingle,
            (Class::G2Item, 0) => K::G2Item,
            (Class::G0, REALTIME) => K::G0Realtime,
            (Class::G1c, REALTIME) => K::G1cRealtime,
            (Class::GSingle, REALTIME) => K::GSingleRealtime,
            (Class::G2Item, REALTIME) => K::G2ItemRealtime,
            (Class::G0, _) => K::G0Process,
            (Class::G1c, _) => K::G1cProcess,
            (Class::GSingle, _) => K::GSingleProcess,
            (Class::G2Item, _) => K::G2ItemProcess,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Class::G0 => "a cycle of write-write dependencies",
            Class::G1c => "a cycle of write-write and write-read dependencies",
            Class::GSingle => "a cycle with exactly one read-write anti-dependency",
            Class::G2Item => "a cycle with two or more read-write anti-dependencies",
        }
    }
}

// Search automaton state: bits 0-1 count rw edges (saturating at 2), bit 2
// records a wr edge, bit 3 an order edge.
fn next_state(class: Class, state: u8, bit: Mask) -> Option<u8> {
    let mut rw = state & 3;
    if bit == RW {
        if class == Class::GSingle && rw >= 1 {
            return None;
        }
        rw = (rw + 1).min(2);
    }
    let mut s = (state & !3) | rw;
    if bit == WR {
        s |= 4;
    }
    if bit & ORDER != 0 {
        s |= 8;
    }
    Some(s)
}

fn accepts(class: Class, need_order: bool, state: u8) -> bool {
    let rw = state & 3;
    let ok = match class {
        Class::G0 => true,
        Class::G1c => state & 4 != 0,
        Class::GSingle => rw == 1,
        Class::G2Item => rw >= 1,
    };
    ok && (!need_order || state & 8 != 0)
}

/// Check a list-append history. Operations other than `txn` are ignored
/// (and counted as `ignored-ops`).
pub fn check(history: &[Event], options: &AppendOptions) -> Result<Verdict, CheckError> {
    let mut checker = Checker::new(history, options)?;
    checker.infer_version_orders();
    checker.check_reads();
    checker.check_internal();
    checker.check_intermediate_reads();
    checker.check_lost_updates();
    checker.build_graph();
    checker.find_cycles();
    Ok(checker.verdict)
}

struct Checker<'a> {
    model: Model,
    budget: u64,
    txns: Vec<Txn<'a>>,
    /// (key, value) -> its appender
    writers: HashMap<(u64, u64), Writer>,
    reads: Vec<ReadRef>,
    /// Keys in first-seen order, and each key's reads.
    keys: Vec<u64>,
    reads_by_key: HashMap<u64, Vec<usize>>,
    /// Version order of each key (the longest read, without repeats), and
    /// whether the longest read was itself free of repeats.
    orders: HashMap<u64, (Vec<u64>, bool)>,
    /// Each key's longest read.
    longest: HashMap<u64, usize>,
    /// Reads that are a prefix of their key's longest read.
    compatible: Vec<bool>,
    /// `info` transactions whose appends were read.
    observed: Vec<bool>,
    /// Graph node of each committed transaction, and back.
    node_of: Vec<Option<u32>>,
    txn_of: Vec<usize>,
    graph: Graph,
    why: HashMap<(u32, u32, Mask), Why>,
    verdict: Verdict,
}

impl<'a> Checker<'a> {
    fn new(history: &'a [Event], options: &AppendOptions) -> Result<Checker<'a>, CheckError> {
        let mut verdict = Verdict::new("append");
        verdict.model = Some(options.model.name().to_string());
        let mut txns = Vec::new();
        for op in op::pair(history)? {
            if op.f() != TXN {
                verdict.count("ignored-ops", 1);
                continue;
            }
            let outcome = op.outcome();
            let bad = |index: usize, reason: String| CheckError::BadValue {
                index,
                f: TXN.into(),
                reason,
            };
            let mut mops = parse_txn(&op.invoke.value).map_err(|r| bad(op.index, r))?;
            if outcome == Outcome::Ok {
                let index = op.completion_index.unwrap_or(op.index);
                let done = parse_txn(op.value()).map_err(|r| bad(index, r))?;
                let same_shape = done.len() == mops.len()
                    && done.iter().zip(&mops).all(|(a, b)| match (a, b) {
                        (Mop::Append { .. }, Mop::Append { .. }) => a == b,
                        (Mop::Read { key: x, .. }, Mop::Read { key: y, .. }) => x == y,
                        _ => false,
                    });
                if !same_shape {
                    return Err(bad(
                        index,
                        "completion's micro-ops differ from the invocation's".into(),
                    ));
                }
                // an ok read of a missing key may be null: the empty list
                mops = done
                    .into_iter()
                    .map(|m| match m {
                        Mop::Read { key, value } => Mop::Read {
                            key,
                            value: Some(value.unwrap_or_default()),
                        },
                        m => m,
                    })
                    .collect();
            } else {
                for m in &mut mops {
                    if let Mop::Read { value, .. } = m {
                        *value = None;
                    }
                }
            }
            verdict.count(
                match outcome {
                    Outcome::Ok => "ok",
                    Outcome::Fail => "fail",
                    Outcome::Info => "info",
                },
                1,
            );
            txns.push(Txn { op, outcome, mops });
        }

        let mut writers: HashMap<(u64, u64), Writer> = HashMap::new();
        let mut reads = Vec::new();
        let mut keys = Vec::new();
        let mut reads_by_key: HashMap<u64, Vec<usize>> = HashMap::new();
        for (t, txn) in txns.iter().enumerate() {
            let mut last_append: HashMap<u64, (u64, u64)> = HashMap::new();
            let mut appended: HashSet<u64> = HashSet::new();
            for (m, mop) in txn.mops.iter().enumerate() {
                let key = mop.key();
                if let Entry::Vacant(slot) = reads_by_key.entry(key) {
                    slot.insert(Vec::new());
                    keys.push(key);
                }
                match mop {
                    Mop::Append { value, .. } => {
                        if let Some(prior) = writers.insert(
                            (key, *value),
                            Writer {
                                txn: t,
                                last: false,
                            },
                        ) {
                            return Err(CheckError::DuplicateWrite {
                                key: key.to_string(),
                                value: value.to_string(),
                                first: txns[prior.txn].op.index,
                                second: txn.op.index,
                            });
                        }
                        last_append.insert(key, (key, *value));
                        appended.insert(key);
                    }
                    Mop::Read { value: Some(_), .. } => {
                        if let Some(list) = reads_by_key.get_mut(&key) {
                            list.push(reads.len());
                        }
                        reads.push(ReadRef {
                            txn: t,
                            mop: m,
                            key,
                            external: !appended.contains(&key),
                        });
                    }
                    Mop::Read { value: None, .. } => {}
                }
            }
            for at in last_append.into_values() {
                if let Some(w) = writers.get_mut(&at) {
                    w.last = true;
                }
            }
        }
        verdict.count("keys", keys.len() as u64);
        let n = txns.len();
        Ok(Checker {
            model: options.model,
            budget: options.search_budget,
            txns,
            writers,
            compatible: vec![true; reads.len()],
            reads,
            keys,
            reads_by_key,
            orders: HashMap::new(),
            longest: HashMap::new(),
            observed: vec![false; n],
            node_of: vec![None; n],
            txn_of: Vec::new(),
            graph: Graph::from_edges(0, Vec::new()),
            why: HashMap::new(),
            verdict,
        })
    }

    fn values(&self, r: &ReadRef) -> &[u64] {
        self.txns[r.txn].read(r.mop)
    }

    fn label(&self, txn: usize) -> String {
        self.txns[txn].op.label()
    }

    fn anomaly(&mut self, kind: AnomalyKind, explanation: String, txns: &[usize], details: Value) {
        let ops = txns.iter().map(|&t| self.txns[t].op.evidence()).collect();
        let violation = self.model.forbids(kind);
        self.verdict.push(Anomaly {
            kind,
            violation,
            explanation,
            ops,
            cycle: Vec::new(),
            details,
        });
    }

    /// What is wrong with the elements of one list read from `key`, by
    /// position; also marks the `info` transactions whose appends it holds
    /// as observed.
    fn element_problems(&mut self, key: u64, values: &[u64]) -> Vec<(usize, Problem)> {
        let mut seen = HashSet::new();
        let mut problems = Vec::new();
        for (p, &v) in values.iter().enumerate() {
            if !seen.insert(v) {
                problems.push((p, Problem::Duplicate(v)));
            }
            match self.writers.get(&(key, v)) {
                None => problems.push((p, Problem::Garbage(v))),
                Some(w) => match self.txns[w.txn].outcome {
                    Outcome::Fail => problems.push((p, Problem::Aborted(w.txn, v))),
                    Outcome::Info => self.observed[w.txn] = true,
                    Outcome::Ok => {}
                },
            }
        }
        problems
    }

    /// Duplicates, garbage and aborted reads; marks observed `info` appends.
    /// A read that is a prefix of its key's longest read has exactly the
    /// longest read's problems that lie within its length, so only the
    /// longest and the incompatible reads are looked at element by element.
    fn check_reads(&mut self) {
        let mut problems_of: Vec<Vec<(usize, Problem)>> = vec![Vec::new(); self.reads.len()];
        for k in 0..self.keys.len() {
            let key = self.keys[k];
            let rs = self.reads_by_key.get(&key).cloned().unwrap_or_default();
            let Some(&longest) = self.longest.get(&key) else {
                continue;
            };
            let full = self.values(&self.reads[longest]).to_vec();
            let in_longest = self.element_problems(key, &full);
            for r in rs {
                problems_of[r] = if self.compatible[r] {
                    let n = self.values(&self.reads[r]).len();
                    in_longest
                        .iter()
                        .take_while(|(p, _)| *p < n)
                        .copied()
                        .collect()
                } else {
                    let values = self.values(&self.reads[r]).to_vec();
                    self.element_problems(key, &values)
                };
            }
        }
        for (r, problems) in problems_of.into_iter().enumerate() {
            if !problems.is_empty() {
                self.report_read_problems(r, &problems);
            }
        }
        let observed = self.observed.iter().filter(|o| **o).count();
        self.verdict.count("info-observed", observed as u64);
    }

    fn report_read_problems(&mut self, r: usize, problems: &[(usize, Problem)]) {
        let read = self.reads[r];
        let values = self.values(&read);
        let reader = self.label(read.txn);
        let shown = fmt_list(values);
        let mut dups = Vec::new();
        let mut garbage = Vec::new();
        let mut aborted: Vec<(usize, u64)> = Vec::new();
        for &(_, problem) in problems {
            match problem {
                Problem::Duplicate(v) if !dups.contains(&v) => dups.push(v),
                Problem::Garbage(v) => garbage.push(v),
                Problem::Aborted(t, v) if !aborted.iter().any(|&(x, _)| x == t) => {
                    aborted.push((t, v))
                }
                _ => {}
            }
        }
        if !dups.is_empty() {
            self.anomaly(
                AnomalyKind::DuplicateElements,
                format!(
                    "{reader} read key {} = {shown}, which holds {} more than once",
                    read.key,
                    fmt_list(&dups)
                ),
                &[read.txn],
                json!({"key": read.key, "duplicates": dups}),
            );
        }
        if !garbage.is_empty() {
            self.anomaly(
                AnomalyKind::GarbageRead,
                format!(
                    "{reader} read key {} = {shown}, but nobody ever appended {}",
                    read.key,
                    fmt_list(&garbage)
                ),
                &[read.txn],
                json!({"key": read.key, "values": garbage}),
            );
        }
        for (writer, v) in aborted {
            let writer_label = self.label(writer);
            self.anomaly(
                AnomalyKind::G1a,
                format!(
                    "aborted read: {reader} read key {} = {shown}, including {v}, \
                     appended by {writer_label}, which failed",
                    read.key
                ),
                &[read.txn, writer],
                json!({"key": read.key, "value": v}),
            );
        }
    }

    /// Each read reflects the transaction's own earlier reads and appends.
    fn check_internal(&mut self) {
        let mut found = Vec::new();
        for (t, txn) in self.txns.iter().enumerate() {
            if txn.outcome != Outcome::Ok {
                continue;
            }
            // key -> (the last read, if any; own appends since)
            let mut state: HashMap<u64, (Option<&[u64]>, Vec<u64>)> = HashMap::new();
            for (m, mop) in txn.mops.iter().enumerate() {
                match mop {
                    Mop::Append { key, value } => state.entry(*key).or_default().1.push(*value),
                    Mop::Read { key, .. } => {
                        let got = txn.read(m);
                        let entry = state.entry(*key).or_default();
                        let (base, own) = (entry.0, &entry.1);
                        let consistent = match base {
                            Some(b) => {
                                got.len() == b.len() + own.len()
                                    && got.starts_with(b)
                                    && got.ends_with(own)
                            }
                            None => got.ends_with(own),
                        };
                        if !consistent {
                            let expected = match base {
                                Some(b) => {
                                    let mut l = b.to_vec();
                                    l.extend_from_slice(own);
                                    format!("exactly {}", fmt_list(&l))
                                }
                                None => format!("a list ending with {}", fmt_list(own)),
                            };
                            found.push((t, *key, expected, got.to_vec()));
                            break;
                        }
                        *entry = (Some(got), Vec::new());
                    }
                }
            }
        }
        for (t, key, expected, got) in found {
            let explanation = format!(
                "{} read key {key} = {}, but its own earlier reads and appends \
                 mean it should have read {expected}",
                self.label(t),
                fmt_list(&got)
            );
            self.anomaly(
                AnomalyKind::Internal,
                explanation,
                &[t],
                json!({"key": key, "read": got, "expected": expected}),
            );
        }
    }

    /// Version order = longest read; every read must be a prefix of it.
    fn infer_version_orders(&mut self) {
        for k in 0..self.keys.len() {
            let key = self.keys[k];
            let Some(rs) = self.reads_by_key.get(&key) else {
                continue;
            };
            let Some(&longest) = rs.iter().max_by_key(|&&r| {
                // longest; among equals, the earliest read
                (self.values(&self.reads[r]).len(), std::cmp::Reverse(r))
            }) else {
                self.orders.insert(key, (Vec::new(), true));
                continue;
            };
            let full = self.values(&self.reads[longest]).to_vec();
            let mut incompatible = Vec::new();
            for &r in rs {
                let values = self.values(&self.reads[r]);
                if !full.starts_with(values) {
                    self.compatible[r] = false;
                    incompatible.push(r);
                }
            }
            let mut seen = HashSet::new();
            let order: Vec<u64> = full.iter().copied().filter(|v| seen.insert(*v)).collect();
            let clean = order.len() == full.len();
            self.orders.insert(key, (order, clean));
            self.longest.insert(key, longest);
            if !incompatible.is_empty() {
                let mut explanation = format!(
                    "reads of key {key} disagree on its order: {} read {}, but",
                    self.label(self.reads[longest].txn),
                    fmt_list(&full)
                );
                let mut txns = vec![self.reads[longest].txn];
                let mut details = vec![json!(full)];
                for (i, &r) in incompatible.iter().enumerate() {
                    let read = self.reads[r];
                    if i == 8 {
                        let _ = write!(explanation, " … ({} in all)", incompatible.len());
                        break;
                    }
                    let values = self.values(&read).to_vec();
                    let sep = if i == 0 { "" } else { ";" };
                    let _ = write!(
                        explanation,
                        "{sep} {} read {}",
                        self.label(read.txn),
                        fmt_list(&values)
                    );
                    txns.push(read.txn);
                    details.push(json!(values));
                }
                explanation.push_str(", which is not a prefix of it");
                self.anomaly(
                    AnomalyKind::IncompatibleOrder,
                    explanation,
                    &txns,
                    json!({"key": key, "reads": details}),
                );
            }
        }
    }

    /// G1b: another transaction's read ends on a non-final append.
    fn check_intermediate_reads(&mut self) {
        for r in 0..self.reads.len() {
            let read = self.reads[r];
            let Some(&last) = self.values(&read).last() else {
                continue;
            };
            let Some(w) = self.writers.get(&(read.key, last)).copied() else {
                continue;
            };
            if w.txn == read.txn || w.last || self.txns[w.txn].outcome == Outcome::Fail {
                continue;
            }
            let explanation = format!(
                "intermediate read: {} read key {} = {}, ending on {last}, but {} \
                 appended more to key {} after {last}",
                self.label(read.txn),
                read.key,
                fmt_list(self.values(&read)),
                self.label(w.txn),
                read.key
            );
            self.anomaly(
                AnomalyKind::G1b,
                explanation,
                &[read.txn, w.txn],
                json!({"key": read.key, "value": last}),
            );
        }
    }

    /// Lost update: committed transactions that read the same version of a
    /// key and both appended to it.
    fn check_lost_updates(&mut self) {
        // (key, version length, version's last element) -> readers
        let mut groups: HashMap<(u64, usize, Option<u64>), Vec<usize>> = HashMap::new();
        let mut order = Vec::new();
        for t in 0..self.txns.len() {
            if self.txns[t].outcome != Outcome::Ok {
                continue;
            }
            // the first external read of each key, and keys appended after it
            let mut read_first: HashMap<u64, usize> = HashMap::new();
            let mut appended: HashSet<u64> = HashSet::new();
            let mut appended_after: BTreeSet<u64> = BTreeSet::new();
            for (m, mop) in self.txns[t].mops.iter().enumerate() {
                match mop {
                    Mop::Read { key, .. } => {
                        if !appended.contains(key) {
                            read_first.entry(*key).or_insert(m);
                        }
                    }
                    Mop::Append { key, .. } => {
                        appended.insert(*key);
                        if read_first.contains_key(key) {
                            appended_after.insert(*key);
                        }
                    }
                }
            }
            for key in appended_after {
                let m = read_first[&key];
                let values = self.txns[t].read(m);
                let version = (key, values.len(), values.last().copied());
                let group = groups.entry(version).or_default();
                if group.is_empty() {
                    order.push(version);
                }
                group.push(t);
            }
        }
        for version in order {
            let group = &groups[&version];
            if group.len() < 2 {
                continue;
            }
            let (key, len, last) = version;
            let names: Vec<String> = group.iter().map(|&t| self.label(t)).collect();
            let at = match last {
                Some(v) => format!("the version ending in {v} ({len} elements)"),
                None => "the empty version".to_string(),
            };
            let explanation = format!(
                "lost update: {} all read key {key} at {at} and all appended to it",
                names.join(", ")
            );
            let group = group.clone();
            self.anomaly(
                AnomalyKind::LostUpdate,
                explanation,
                &group,
                json!({"key": key, "read_length": len, "read_last": last}),
            );
        }
    }

    fn committed(&self, t: usize) -> bool {
        match self.txns[t].outcome {
            Outcome::Ok => true,
            Outcome::Info => self.observed[t],
            Outcome::Fail => false,
        }
    }

    fn build_graph(&mut self) {
        for t in 0..self.txns.len() {
            if self.committed(t) {
                self.node_of[t] = Some(self.txn_of.len() as u32);
                self.txn_of.push(t);
            }
        }
        let mut edges: Vec<(u32, u32, Mask)> = Vec::new();
        let mut why: HashMap<(u32, u32, Mask), Why> = HashMap::new();
        let mut add = |a: u32, b: u32, bit: Mask, w: Why| {
            if a != b {
                edges.push((a, b, bit));
                why.entry((a, b, bit)).or_insert(w);
            }
        };

        // ww: successive committed appenders in each key's version order
        for &key in &self.keys {
            let Some((order, _)) = self.orders.get(&key) else {
                continue;
            };
            let mut prev: Option<(u32, u64)> = None;
            for &v in order {
                let Some(node) = self
                    .writers
                    .get(&(key, v))
                    .and_then(|w| self.node_of[w.txn])
                else {
                    continue;
                };
                if let Some((p, pv)) = prev
                    && p != node
                {
                    add(
                        p,
                        node,
                        WW,
                        Why::Ww {
                            key,
                            from: pv,
                            to: v,
                        },
                    );
                }
                prev = Some((node, v));
            }
        }

        // wr and rw from each external read
        for (r, read) in self.reads.iter().enumerate() {
            if !read.external {
                continue;
            }
            let Some(reader) = self.node_of[read.txn] else {
                continue;
            };
            let values = self.txns[read.txn].read(read.mop);
            let key = read.key;
            if let Some(&last) = values.last()
                && let Some(w) = self
                    .writers
                    .get(&(key, last))
                    .and_then(|w| self.node_of[w.txn])
            {
                add(w, reader, WR, Why::Wr { key, value: last });
            }
            let Some((order, clean)) = self.orders.get(&key) else {
                continue;
            };
            if !self.compatible[r] || !clean {
                continue;
            }
            if let Some(&next) = order.get(values.len())
                && let Some(w) = self
                    .writers
                    .get(&(key, next))
                    .and_then(|w| self.node_of[w.txn])
            {
                add(
                    reader,
                    w,
                    RW,
                    Why::Rw {
                        key,
                        last: values.last().copied(),
                        next,
                    },
                );
            }
        }

        let order_edges = self.model.order_edges();
        if order_edges & PROCESS != 0 {
            // each committed transaction follows its process's last ok one
            let mut last_ok: HashMap<u64, u32> = HashMap::new();
            for (t, txn) in self.txns.iter().enumerate() {
                let Some(node) = self.node_of[t] else {
                    continue;
                };
                if let Some(&p) = last_ok.get(&txn.op.process()) {
                    add(p, node, PROCESS, Why::Process);
                }
                if txn.outcome == Outcome::Ok {
                    last_ok.insert(txn.op.process(), node);
                }
            }
        }
        if order_edges & REALTIME != 0 {
            // transitive reduction of "completed before invoked": link each
            // invocation to the frontier of completed transactions not yet
            // known to precede another completed one.
            let mut points: Vec<(u64, bool, u32)> = Vec::new();
            for (t, txn) in self.txns.iter().enumerate() {
                let Some(node) = self.node_of[t] else {
                    continue;
                };
                points.push((txn.op.invoke_time(), false, node));
                if txn.outcome == Outcome::Ok
                    && let Some(done) = txn.op.complete_time()
                {
                    points.push((done, true, node));
                }
            }
            points.sort_unstable();
            let mut frontier: Vec<(u32, u64)> = Vec::new();
            let mut preds: HashMap<u32, Vec<u32>> = HashMap::new();
            for (time, completion, node) in points {
                if completion {
                    let before = preds.remove(&node).unwrap_or_default();
                    frontier.retain(|(f, _)| !before.contains(f));
                    frontier.push((node, time));
                } else {
                    for &(f, done) in &frontier {
                        add(
                            f,
                            node,
                            REALTIME,
                            Why::Realtime {
                                completed: done,
                                invoked: time,
                            },
                        );
                    }
                    preds.insert(node, frontier.iter().map(|(f, _)| *f).collect());
                }
            }
        }

        self.graph = Graph::from_edges(self.txn_of.len(), edges);
        self.why = why;
        self.verdict
            .count("graph-nodes", self.graph.node_count() as u64);
        self.verdict
            .count("graph-edges", self.graph.edge_count() as u64);
    }

    fn find_cycles(&mut self) {
        let order_edges = self.model.order_edges();
        let mut passes = vec![0];
        if order_edges != 0 {
            passes.push(order_edges);
        }
        for order in passes {
            let mut single_nodes: HashSet<u32> = HashSet::new();
            for class in [Class::G0, Class::G1c, Class::GSingle, Class::G2Item] {
                let cycles = self.search(class, order, &single_nodes);
                for cycle in cycles {
                    let rws = cycle.iter().filter(|s| s.bit == RW).count();
                    let class = match class {
                        Class::G2Item if rws == 1 => Class::GSingle,
                        c => c,
                    };
                    if class == Class::GSingle {
                        single_nodes.extend(cycle.iter().map(|s| s.from));
                    }
                    self.report_cycle(class, &cycle);
                }
            }
        }
    }

    /// One shortest cycle of `class` per strongly connected component of the
    /// class's edges. With `order` set, only cycles using an order edge.
    fn search(&mut self, class: Class, order: Mask, skip: &HashSet<u32>) -> Vec<Vec<Step>> {
        let allowed = order
            | match class {
                Class::G0 => WW,
                Class::G1c => WW | WR,
                Class::GSingle | Class::G2Item => WW | WR | RW,
            };
        let start_bits = match class {
            Class::G0 if order != 0 => order,
            Class::G0 => WW,
            Class::G1c => WR,
            Class::GSingle | Class::G2Item => RW,
        };
        let need_order = order != 0;
        let sccs = self.graph.sccs(allowed);
        // For G-single the rest of the cycle has no rw edge: a path b ~> a
        // over the other edges needs comp(a) <= comp(b) in their SCC order.
        let rest = (class == Class::GSingle).then(|| self.graph.sccs(allowed & !RW));
        let mut budget = self.budget;
        let mut found = Vec::new();
        let mut exhausted = false;
        'sccs: for (c, members) in sccs.nontrivial() {
            if members.iter().any(|n| skip.contains(n)) {
                continue;
            }
            for &a in members {
                for (b, mask) in self.graph.out(a) {
                    if sccs.comp[b as usize] != c {
                        continue;
                    }
                    for bit in [WW, WR, RW, PROCESS, REALTIME] {
                        if mask & bit & start_bits == 0 {
                            continue;
                        }
                        let (lo, hi) = match &rest {
                            Some(r) => (r.comp[a as usize], r.comp[b as usize]),
                            None => (0, u32::MAX),
                        };
                        if lo > hi {
                            continue;
                        }
                        let Some(initial) = next_state(class, 0, bit) else {
                            continue;
                        };
                        let in_scope = |n: u32| {
                            sccs.comp[n as usize] == c
                                && rest
                                    .as_ref()
                                    .is_none_or(|r| (lo..=hi).contains(&r.comp[n as usize]))
                        };
                        match self.graph.find_path(
                            b,
                            a,
                            initial,
                            allowed,
                            in_scope,
                            |s, e| next_state(class, s, e),
                            |s| accepts(class, need_order, s),
                            &mut budget,
                        ) {
                            Ok(Some(path)) => {
                                let mut cycle = vec![Step {
                                    from: a,
                                    to: b,
                                    bit,
                                }];
                                cycle.extend(path);
                                found.push(cycle);
                                continue 'sccs;
                            }
                            Ok(None) => {}
                            Err(_) => {
                                exhausted = true;
                                break 'sccs;
                            }
                        }
                    }
                }
            }
        }
        if exhausted {
            let kind = class.kind(if order & REALTIME != 0 {
                REALTIME
            } else {
                order
            });
            self.verdict.push(Anomaly {
                kind: AnomalyKind::CycleSearchIncomplete,
                violation: self.model.forbids(kind),
                explanation: format!(
                    "the search for {kind} cycles looked at {} edges and gave up; \
                     {kind} anomalies may exist that were not found",
                    self.budget
                ),
                ops: Vec::new(),
                cycle: Vec::new(),
                details: json!({"class": kind}),
            });
        }
        found
    }

    fn report_cycle(&mut self, class: Class, cycle: &[Step]) {
        let used = cycle.iter().fold(0, |m, s| m | s.bit);
        let order = if used & REALTIME != 0 {
            REALTIME
        } else {
            used & PROCESS
        };
        let kind = class.kind(order);
        let mut steps = Vec::new();
        let mut txns = Vec::new();
        let mut chain = String::new();
        for s in cycle {
            let (from, to) = (self.txn_of[s.from as usize], self.txn_of[s.to as usize]);
            txns.push(from);
            let why = self
                .why
                .get(&(s.from, s.to, s.bit))
                .map(|w| self.render(*w, from, to))
                .unwrap_or_default();
            let _ = write!(
                chain,
                "{} -{}-> ",
                self.txns[from].op.index,
                edge_name(s.bit)
            );
            steps.push(CycleStep {
                from: self.txns[from].op.index,
                to: self.txns[to].op.index,
                edge: edge_kind(s.bit),
                why,
            });
        }
        if let Some(first) = cycle.first() {
            let _ = write!(
                chain,
                "{}",
                self.txns[self.txn_of[first.from as usize]].op.index
            );
        }
        let extra = match order {
            REALTIME => " (using real-time order)",
            PROCESS => " (using process order)",
            _ => "",
        };
        let explanation = format!(
            "{kind}: {}{extra} among {} transactions: {chain}; {}",
            class.describe(),
            txns.len(),
            steps
                .iter()
                .map(|s| s.why.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
        let ops = txns.iter().map(|&t| self.txns[t].op.evidence()).collect();
        self.verdict.push(Anomaly {
            kind,
            violation: self.model.forbids(kind),
            explanation,
            ops,
            cycle: steps,
            details: Value::Null,
        });
    }

    fn render(&self, why: Why, from: usize, to: usize) -> String {
        let (a, b) = (self.label(from), self.label(to));
        match why {
            Why::Ww { key, from, to } => {
                format!("{a} appended {from} to key {key}, then {b} appended {to}")
            }
            Why::Wr { key, value } => {
                format!("{b} read key {key} ending on {value}, which {a} appended")
            }
            Why::Rw { key, last, next } => {
                let version = match last {
                    Some(v) => format!("ending on {v}"),
                    None => "empty".to_string(),
                };
                format!("{a} read key {key} {version}, and {b} appended the next value, {next}")
            }
            Why::Process => format!("{a}, then {b}, on process {}", self.txns[from].op.process()),
            Why::Realtime { completed, invoked } => {
                format!("{a} completed at {completed} ns, before {b} was invoked at {invoked} ns")
            }
        }
    }
}

/// A list for explanations; long lists show their last elements only.
fn fmt_list(values: &[u64]) -> String {
    const SHOWN: usize = 6;
    if values.len() <= SHOWN {
        let items: Vec<String> = values.iter().map(u64::to_string).collect();
        return format!("[{}]", items.join(", "));
    }
    let tail: Vec<String> = values[values.len() - SHOWN..]
        .iter()
        .map(u64::to_string)
        .collect();
    format!("[…, {}] ({} elements)", tail.join(", "), values.len())
}

#[cfg(test)]
mod tests;
