//! Operations: each invocation in a history paired with its completion.
//!
//! Owns the pairing rules every checker relies on: a process runs one
//! operation at a time, so an `invoke` is completed by the next `ok`, `fail`
//! or `info` of the same process; an invocation never completed is
//! indeterminate, like `info`. A history that breaks these rules is
//! malformed and yields a [`CheckError`], never a panic.
//!
//! Must not touch: workload values (each checker parses its own) or the
//! history file format (see [`crate::history`]).

use std::collections::HashMap;

use crate::history::{Event, EventType};
use crate::verdict::{CheckError, OpEvidence};

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect.
    Ok,
    /// It definitely did not take effect.
    Fail,
    /// It may or may not have taken effect (`info`, or never completed).
    Info,
}

/// An invocation and, if it came, its completion.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// Position of the `invoke` event in the history; the operation's id.
    pub index: usize,
    pub invoke: &'a Event,
    pub completion: Option<&'a Event>,
    /// Position of the completion event in the history.
    pub completion_index: Option<usize>,
}

impl<'a> Op<'a> {
    pub fn outcome(&self) -> Outcome {
        match self.completion.map(|e| e.kind) {
            Some(EventType::Ok) => Outcome::Ok,
            Some(EventType::Fail) => Outcome::Fail,
            _ => Outcome::Info,
        }
    }

    pub fn process(&self) -> u64 {
        self.invoke.process
    }

    pub fn f(&self) -> &'a str {
        &self.invoke.f
    }

    pub fn invoke_time(&self) -> u64 {
        self.invoke.time_ns
    }

    /// When the client learned the outcome (`None` if it never did).
    pub fn complete_time(&self) -> Option<u64> {
        self.completion.map(|e| e.time_ns)
    }

    /// What was observed for an `ok` operation, what was asked otherwise.
    pub fn value(&self) -> &'a serde_json::Value {
        match (self.outcome(), self.completion) {
            (Outcome::Ok, Some(c)) => &c.value,
            _ => &self.invoke.value,
        }
    }

    /// The event to show as evidence: the completion, else the invocation.
    pub fn evidence(&self) -> OpEvidence {
        OpEvidence {
            index: self.index,
            invoke_time_ns: self.invoke.time_ns,
            event: self.completion.unwrap_or(self.invoke).clone(),
        }
    }

    /// A short name for explanations: `op 12 (process 3, n1)`.
    pub fn label(&self) -> String {
        format!(
            "op {} (process {}, {})",
            self.index, self.invoke.process, self.invoke.node
        )
    }
}

/// Pair every invocation with its completion, in invocation order.
pub fn pair(events: &[Event]) -> Result<Vec<Op<'_>>, CheckError> {
    let mut ops: Vec<Op<'_>> = Vec::new();
    // process -> position in `ops` of its pending invocation
    let mut pending: HashMap<u64, usize> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        match event.kind {
            EventType::Invoke => {
                if pending.contains_key(&event.process) {
                    return Err(CheckError::ProcessBusy {
                        index,
                        process: event.process,
                    });
                }
                pending.insert(event.process, ops.len());
                ops.push(Op {
                    index,
                    invoke: event,
                    completion: None,
                    completion_index: None,
                });
            }
            EventType::Ok | EventType::Fail | EventType::Info => {
                let Some(at) = pending.remove(&event.process) else {
                    return Err(CheckError::UnmatchedCompletion {
                        index,
                        process: event.process,
                    });
                };
                let op = &mut ops[at];
                if op.invoke.f != event.f {
                    return Err(CheckError::MismatchedCompletion {
                        index,
                        expected: op.invoke.f.clone(),
                        got: event.f.clone(),
                    });
                }
                op.completion = Some(event);
                op.completion_index = Some(index);
            }
        }
    }
    Ok(ops)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Building histories by hand in tests.
    use crate::history::{Event, EventType};

    /// Appends events with increasing times.
    #[derive(Default)]
    pub struct HistoryBuilder {
        pub events: Vec<Event>,
        pub time: u64,
    }

    impl HistoryBuilder {
        pub fn push(
            &mut self,
            kind: EventType,
            process: u64,
            node: &str,
            f: &str,
            value: serde_json::Value,
        ) -> usize {
            self.time += 10;
            self.events.push(Event {
                kind,
                process,
                node: node.to_string(),
                time_ns: self.time,
                f: f.to_string(),
                value,
                error: match kind {
                    EventType::Fail => Some("1213: Deadlock found".into()),
                    EventType::Info => Some("connection lost".into()),
                    _ => None,
                },
            });
            self.events.len() - 1
        }

        pub fn invoke(&mut self, process: u64, f: &str, value: serde_json::Value) -> usize {
            let node = format!("n{}", process % 3 + 1);
            self.push(EventType::Invoke, process, &node, f, value)
        }

        pub fn complete(
            &mut self,
            kind: EventType,
            process: u64,
            f: &str,
            value: serde_json::Value,
        ) -> usize {
            let node = format!("n{}", process % 3 + 1);
            self.push(kind, process, &node, f, value)
        }
    }

    /// An operation planned by a test: when it was invoked and completed,
    /// what was asked and how it ended.
    #[derive(Debug, Clone)]
    pub struct Planned {
        pub invoke: u64,
        pub complete: u64,
        pub f: &'static str,
        pub asked: serde_json::Value,
        pub kind: EventType,
        pub completion: serde_json::Value,
    }

    /// Record planned operations as a history: each goes to the lowest
    /// process that is free before its invocation (a process runs one
    /// operation at a time), events in time order, an invocation before a
    /// completion at the same instant.
    pub fn interleave(ops: &[Planned]) -> Vec<Event> {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&i| (ops[i].invoke, i));
        let mut busy_until: Vec<u64> = Vec::new();
        let mut events: Vec<(u64, u8, usize, Event)> = Vec::new();
        for i in order {
            let op = &ops[i];
            let process = match busy_until.iter().position(|&t| t < op.invoke) {
                Some(p) => p,
                None => {
                    busy_until.push(0);
                    busy_until.len() - 1
                }
            };
            busy_until[process] = op.complete;
            let event = |kind, time_ns, value: &serde_json::Value| Event {
                kind,
                process: process as u64,
                node: format!("n{}", process % 3 + 1),
                time_ns,
                f: op.f.into(),
                value: value.clone(),
                error: None,
            };
            events.push((
                op.invoke,
                0,
                i,
                event(EventType::Invoke, op.invoke, &op.asked),
            ));
            events.push((
                op.complete,
                1,
                i,
                event(op.kind, op.complete, &op.completion),
            ));
        }
        events.sort_by_key(|(t, rank, i, _)| (*t, *rank, *i));
        events.into_iter().map(|(_, _, _, e)| e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::HistoryBuilder;
    use super::*;
    use serde_json::json;

    #[test]
    fn invocations_pair_with_the_next_completion_of_their_process() {
        let mut h = HistoryBuilder::default();
        h.invoke(1, "add", json!(1));
        h.invoke(2, "add", json!(2));
        h.complete(EventType::Fail, 2, "add", json!(2));
        h.complete(EventType::Ok, 1, "add", json!(1));
        h.invoke(1, "add", json!(3));
        let ops = pair(&h.events).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(
            (ops[0].index, ops[0].outcome(), ops[0].complete_time()),
            (0, Outcome::Ok, Some(40))
        );
        assert_eq!(ops[1].outcome(), Outcome::Fail);
        assert_eq!(ops[2].outcome(), Outcome::Info, "never completed");
        assert_eq!(ops[2].evidence().event.kind, EventType::Invoke);
    }

    #[test]
    fn malformed_histories_are_errors() {
        let mut h = HistoryBuilder::default();
        h.invoke(1, "add", json!(1));
        h.invoke(1, "add", json!(2));
        assert_eq!(
            pair(&h.events).unwrap_err(),
            CheckError::ProcessBusy {
                index: 1,
                process: 1
            }
        );

        let mut h = HistoryBuilder::default();
        h.complete(EventType::Ok, 4, "add", json!(1));
        assert!(matches!(
            pair(&h.events),
            Err(CheckError::UnmatchedCompletion { index: 0, .. })
        ));

        let mut h = HistoryBuilder::default();
        h.invoke(1, "add", json!(1));
        h.complete(EventType::Ok, 1, "read", json!([]));
        assert!(matches!(
            pair(&h.events),
            Err(CheckError::MismatchedCompletion { index: 1, .. })
        ));
    }
}
