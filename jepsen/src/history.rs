//! Histories: what each client asked for and what it was told.
//!
//! Owns the event model and its JSON-lines encoding. Client error semantics
//! are fixed here so every workload agrees: errors 1213 (deadlock /
//! certification failure), 1020 (record changed under snapshot isolation)
//! and 1047 (node not primary) mean the operation *definitely failed*; a lost
//! connection or a timeout means it is *indeterminate*.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// The stage of an operation an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client is about to send the operation.
    Invoke,
    /// The operation took effect.
    Ok,
    /// The operation definitely did not take effect.
    Fail,
    /// Unknown whether the operation took effect.
    Info,
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The client process; each process runs one operation at a time.
    pub process: u64,
    /// The node the client talks to.
    pub node: String,
    /// Nanoseconds since the test started.
    pub time_ns: u64,
    /// The operation name (workload-specific, e.g. `txn`, `transfer`).
    pub f: String,
    /// The operation's value: what was asked at `invoke`, what was observed
    /// at `ok` (workload-specific JSON).
    pub value: serde_json::Value,
    /// Why an operation failed or is indeterminate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a completed client call is recorded.
pub fn completion_for_mysql_error(code: u16) -> EventType {
    match code {
        1213 | 1020 | 1047 => EventType::Fail,
        _ => EventType::Info,
    }
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("reading history: {0}")]
    Io(#[from] std::io::Error),
    #[error("history line {line}: {source}")]
    Parse {
        line: usize,
        source: serde_json::Error,
    },
}

/// Write events as JSON lines.
pub fn write_jsonl<'a>(
    mut out: impl Write,
    events: impl IntoIterator<Item = &'a Event>,
) -> std::io::Result<()> {
    for event in events {
        serde_json::to_writer(&mut out, event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Read a JSON-lines history; blank lines are skipped.
pub fn read_jsonl(input: impl BufRead) -> Result<Vec<Event>, HistoryError> {
    let mut events = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            line: n + 1,
            source,
        })?;
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventType, process: u64, time_ns: u64) -> Event {
        Event {
            kind,
            process,
            node: "node1".into(),
            time_ns,
            f: "txn".into(),
            value: serde_json::json!([["append", 1, 2], ["r", 1, null]]),
            error: None,
        }
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        let mut failed = event(EventType::Fail, 1, 30);
        failed.error = Some("1213: Deadlock found".into());
        let events = vec![
            event(EventType::Invoke, 0, 10),
            event(EventType::Ok, 0, 20),
            failed,
        ];
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &events).unwrap();
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 3);
        assert_eq!(read_jsonl(&buf[..]).unwrap(), events);
    }

    #[test]
    fn a_corrupt_line_is_reported_with_its_number() {
        let text = "{\"type\":\"invoke\",\"process\":0,\"node\":\"n\",\"time_ns\":1,\"f\":\"x\",\"value\":null}\nnot json\n";
        match read_jsonl(text.as_bytes()) {
            Err(HistoryError::Parse { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn definite_failures_and_indeterminate_errors() {
        assert_eq!(completion_for_mysql_error(1213), EventType::Fail);
        assert_eq!(completion_for_mysql_error(1020), EventType::Fail);
        assert_eq!(completion_for_mysql_error(1047), EventType::Fail);
        assert_eq!(completion_for_mysql_error(2013), EventType::Info);
    }
}
