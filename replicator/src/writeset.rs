//! The write-set and log-entry domain types, and the one place where they
//! are converted to and from the wire schema (`proto::v1`).
//!
//! Decoding is strict: anything the schema allows but the domain does not
//! (an unspecified key kind, a key or body missing) is a [`DecodeError`], so
//! a malformed entry is refused instead of being half-understood.

use prost::Message;
use proto::v1 as pb;

use crate::certify::{KeyKind, Seqno};

/// What a certification key covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyScope {
    /// A whole database (schema).
    Database { database: Vec<u8> },
    /// A whole table.
    Table { database: Vec<u8>, table: Vec<u8> },
    /// One entry of a primary or unique index; `values` is the normalized
    /// encoding from [`crate::keys::RowKeyEncoder`].
    Row {
        database: Vec<u8>,
        table: Vec<u8>,
        index: String,
        values: Vec<u8>,
    },
}

/// A key as carried by a write-set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteSetKey {
    pub kind: KeyKind,
    pub scope: KeyScope,
}

/// A statement executed in total order isolation (DDL, account statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TOIStatement {
    /// The client's current database, empty if none.
    pub database: String,
    pub statement: Vec<u8>,
    /// Session variables the statement depends on, in the order to set them.
    pub session: Vec<(String, String)>,
}

/// What a write-set carries to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Raw binlog row events, replayed with `BINLOG '…'`.
    Rows {
        format_description: Vec<u8>,
        events: Vec<u8>,
    },
    /// A statement run in total order isolation.
    Toi(TOIStatement),
}

/// One transaction's changes, as ordered, certified and applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSet {
    pub origin_node: u64,
    pub xid: Vec<u8>,
    pub depends_on: Seqno,
    pub keys: Vec<WriteSetKey>,
    pub body: Body,
}

/// An entry of the ordered log, as the replicator's state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    WriteSet(WriteSet),
    /// The origin gave up transaction `xid`: a write-set for it later in
    /// the log is ignored by every node.
    Abandon {
        origin_node: u64,
        xid: Vec<u8>,
    },
}

/// A wire message that does not describe a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("log entry is not valid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("log entry has no payload (written by a newer version?)")]
    EmptyEntry,
    #[error("write-set key {index} has no scope")]
    KeyWithoutScope { index: usize },
    #[error("write-set key {index} has an unspecified or unknown kind ({kind})")]
    BadKeyKind { index: usize, kind: i32 },
    #[error("write-set has neither row events nor a TOI statement")]
    NoBody,
}

impl From<KeyKind> for pb::KeyKind {
    fn from(kind: KeyKind) -> Self {
        match kind {
            KeyKind::Shared => pb::KeyKind::Shared,
            KeyKind::Exclusive => pb::KeyKind::Exclusive,
        }
    }
}

impl From<WriteSetKey> for pb::CertKey {
    fn from(key: WriteSetKey) -> Self {
        use pb::cert_key::Scope;
        let scope = match key.scope {
            KeyScope::Database { database } => Scope::Database(pb::DatabaseKey { database }),
            KeyScope::Table { database, table } => Scope::Table(pb::TableKey { database, table }),
            KeyScope::Row {
                database,
                table,
                index,
                values,
            } => Scope::Row(pb::RowKey {
                database,
                table,
                index,
                values,
            }),
        };
        pb::CertKey {
            kind: pb::KeyKind::from(key.kind) as i32,
            scope: Some(scope),
        }
    }
}

fn key_from_pb(index: usize, key: pb::CertKey) -> Result<WriteSetKey, DecodeError> {
    use pb::cert_key::Scope;
    let kind = match pb::KeyKind::try_from(key.kind) {
        Ok(pb::KeyKind::Shared) => KeyKind::Shared,
        Ok(pb::KeyKind::Exclusive) => KeyKind::Exclusive,
        Ok(pb::KeyKind::Unspecified) | Err(_) => {
            return Err(DecodeError::BadKeyKind {
                index,
                kind: key.kind,
            });
        }
    };
    let scope = match key.scope.ok_or(DecodeError::KeyWithoutScope { index })? {
        Scope::Database(d) => KeyScope::Database {
            database: d.database,
        },
        Scope::Table(t) => KeyScope::Table {
            database: t.database,
            table: t.table,
        },
        Scope::Row(r) => KeyScope::Row {
            database: r.database,
            table: r.table,
            index: r.index,
            values: r.values,
        },
    };
    Ok(WriteSetKey { kind, scope })
}

impl From<WriteSet> for pb::WriteSet {
    fn from(ws: WriteSet) -> Self {
        use pb::write_set::Body as PbBody;
        let body = match ws.body {
            Body::Rows {
                format_description,
                events,
            } => PbBody::Rows(pb::RowEvents {
                format_description,
                events,
            }),
            Body::Toi(toi) => PbBody::Toi(pb::ToiStatement {
                database: toi.database,
                statement: toi.statement,
                session: toi
                    .session
                    .into_iter()
                    .map(|(name, value)| pb::SessionVariable { name, value })
                    .collect(),
            }),
        };
        pb::WriteSet {
            origin_node: ws.origin_node,
            xid: ws.xid,
            depends_on: ws.depends_on,
            keys: ws.keys.into_iter().map(Into::into).collect(),
            body: Some(body),
        }
    }
}

impl TryFrom<pb::WriteSet> for WriteSet {
    type Error = DecodeError;

    fn try_from(ws: pb::WriteSet) -> Result<Self, DecodeError> {
        use pb::write_set::Body as PbBody;
        let body = match ws.body.ok_or(DecodeError::NoBody)? {
            PbBody::Rows(r) => Body::Rows {
                format_description: r.format_description,
                events: r.events,
            },
            PbBody::Toi(t) => Body::Toi(TOIStatement {
                database: t.database,
                statement: t.statement,
                session: t.session.into_iter().map(|v| (v.name, v.value)).collect(),
            }),
        };
        let keys = ws
            .keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| key_from_pb(i, k))
            .collect::<Result<_, _>>()?;
        Ok(WriteSet {
            origin_node: ws.origin_node,
            xid: ws.xid,
            depends_on: ws.depends_on,
            keys,
            body,
        })
    }
}

impl WriteSet {
    /// Whether this write-set runs in total order isolation.
    pub fn is_toi(&self) -> bool {
        matches!(self.body, Body::Toi(_))
    }
}

impl LogEntry {
    /// The bytes stored in the ordered log.
    pub fn encode(self) -> Vec<u8> {
        let payload = match self {
            LogEntry::WriteSet(ws) => pb::log_entry::Payload::WriteSet(ws.into()),
            LogEntry::Abandon { origin_node, xid } => {
                pb::log_entry::Payload::Abandon(pb::Abandon { origin_node, xid })
            }
        };
        pb::LogEntry {
            payload: Some(payload),
        }
        .encode_to_vec()
    }

    /// Parse bytes read from the ordered log.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let entry = pb::LogEntry::decode(bytes)?;
        match entry.payload.ok_or(DecodeError::EmptyEntry)? {
            pb::log_entry::Payload::WriteSet(ws) => Ok(LogEntry::WriteSet(ws.try_into()?)),
            pb::log_entry::Payload::Abandon(a) => Ok(LogEntry::Abandon {
                origin_node: a.origin_node,
                xid: a.xid,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..12)
    }

    fn scope() -> impl Strategy<Value = KeyScope> {
        prop_oneof![
            bytes().prop_map(|database| KeyScope::Database { database }),
            (bytes(), bytes()).prop_map(|(database, table)| KeyScope::Table { database, table }),
            (bytes(), bytes(), "[A-Za-z_]{0,8}", bytes()).prop_map(
                |(database, table, index, values)| KeyScope::Row {
                    database,
                    table,
                    index,
                    values
                }
            ),
        ]
    }

    fn write_set() -> impl Strategy<Value = WriteSet> {
        let key = (any::<bool>(), scope()).prop_map(|(x, scope)| WriteSetKey {
            kind: if x {
                KeyKind::Exclusive
            } else {
                KeyKind::Shared
            },
            scope,
        });
        let body = prop_oneof![
            (bytes(), bytes()).prop_map(|(format_description, events)| Body::Rows {
                format_description,
                events
            }),
            (
                ".{0,8}",
                bytes(),
                proptest::collection::vec(("[a-z_]{1,8}", ".{0,8}"), 0..3)
            )
                .prop_map(|(database, statement, session)| Body::Toi(TOIStatement {
                    database,
                    statement,
                    session
                })),
        ];
        (
            any::<u64>(),
            bytes(),
            any::<u64>(),
            proptest::collection::vec(key, 0..6),
            body,
        )
            .prop_map(|(origin_node, xid, depends_on, keys, body)| WriteSet {
                origin_node,
                xid,
                depends_on,
                keys,
                body,
            })
    }

    proptest! {
        #[test]
        fn log_entries_round_trip(ws in write_set()) {
            let entry = LogEntry::WriteSet(ws);
            let decoded = LogEntry::decode(&entry.clone().encode()).unwrap();
            prop_assert_eq!(decoded, entry);
        }

        #[test]
        fn abandon_markers_round_trip(origin_node in any::<u64>(), xid in bytes()) {
            let entry = LogEntry::Abandon { origin_node, xid };
            prop_assert_eq!(LogEntry::decode(&entry.clone().encode()).unwrap(), entry);
        }

        #[test]
        fn garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LogEntry::decode(&garbage);
        }
    }

    #[test]
    fn strict_decoding_refuses_incomplete_entries() {
        assert_eq!(LogEntry::decode(&[]), Err(DecodeError::EmptyEntry));
        let no_body = pb::LogEntry {
            payload: Some(pb::log_entry::Payload::WriteSet(pb::WriteSet::default())),
        };
        assert_eq!(
            LogEntry::decode(&no_body.encode_to_vec()),
            Err(DecodeError::NoBody)
        );
        let bad_kind = pb::WriteSet {
            keys: vec![pb::CertKey {
                kind: 0,
                scope: Some(pb::cert_key::Scope::Database(pb::DatabaseKey {
                    database: b"d".to_vec(),
                })),
            }],
            body: Some(pb::write_set::Body::Rows(pb::RowEvents::default())),
            ..Default::default()
        };
        let entry = pb::LogEntry {
            payload: Some(pb::log_entry::Payload::WriteSet(bad_kind)),
        };
        assert_eq!(
            LogEntry::decode(&entry.encode_to_vec()),
            Err(DecodeError::BadKeyKind { index: 0, kind: 0 })
        );
        let no_scope = pb::WriteSet {
            keys: vec![pb::CertKey {
                kind: pb::KeyKind::Exclusive as i32,
                scope: None,
            }],
            body: Some(pb::write_set::Body::Rows(pb::RowEvents::default())),
            ..Default::default()
        };
        let entry = pb::LogEntry {
            payload: Some(pb::log_entry::Payload::WriteSet(no_scope)),
        };
        assert_eq!(
            LogEntry::decode(&entry.encode_to_vec()),
            Err(DecodeError::KeyWithoutScope { index: 0 })
        );
    }
}
