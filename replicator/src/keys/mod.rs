//! Certification keys: what identifies a row, a table or a database, and how
//! values are normalized so that equal-by-collation means equal-by-key.
//!
//! Owns the canonical byte encoding of key scopes, their 128-bit
//! fingerprints, the expansion of a write-set's keys into the hierarchy the
//! certifier checks (a row implies its table and database, shared), and the
//! normalization of index column values ([`RowKeyEncoder`], [`Collation`]).
//!
//! Must not touch I/O: table metadata arrives from `capture`, already read.
//!
//! # Safety rule
//!
//! Two values the server considers equal in an index must get equal keys,
//! or two conflicting transactions could both commit and replicas diverge.
//! The reverse is not required: a false conflict only costs a retry. Every
//! approximation here therefore errs towards *coarser* keys — an unknown
//! collation compares all its strings equal, an unnormalizable value turns
//! the key into a whole-table key.

mod collation;
mod row;
pub mod weights;

pub use collation::{Collation, Unnormalizable};
pub use row::{ColumnValue, RowKeyEncoder, RowKeyValues};
pub use weights::{TableError, WeightTable, Weights};

use xxhash_rust::xxh3::xxh3_128;

use crate::certify::{CertKey, Fingerprint, KeyKind};
use crate::writeset::{KeyScope, WriteSetKey};

/// The fingerprint of a scope: xxh3-128 of its canonical encoding. Equal
/// scopes give equal fingerprints on every node and platform; two different
/// scopes sharing a fingerprint (about 2^-64 likely at 2^32 keys) can only
/// cause a false conflict.
pub fn fingerprint(scope: &KeyScope) -> Fingerprint {
    match scope {
        KeyScope::Database { database } => database_fingerprint(database),
        KeyScope::Table { database, table } => table_fingerprint(database, table),
        KeyScope::Row {
            database,
            table,
            index,
            values,
        } => hash_parts(3, &[database, table, index.as_bytes(), values]),
    }
}

fn database_fingerprint(database: &[u8]) -> Fingerprint {
    hash_parts(1, &[database])
}

fn table_fingerprint(database: &[u8], table: &[u8]) -> Fingerprint {
    hash_parts(2, &[database, table])
}

/// Canonical encoding: a tag for the scope's level, then each part
/// length-prefixed (so `("ab","c")` and `("a","bc")` differ).
fn hash_parts(tag: u8, parts: &[&[u8]]) -> Fingerprint {
    let len = 1 + parts.iter().map(|p| 4 + p.len()).sum::<usize>();
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    buf[0] = tag;
    let mut at = 1;
    for part in parts {
        buf[at..at + 4].copy_from_slice(&(part.len() as u32).to_le_bytes());
        buf[at + 4..at + 4 + part.len()].copy_from_slice(part);
        at += 4 + part.len();
    }
    xxh3_128(buf)
}

/// The keys the certifier checks for a write-set: each key, plus a shared
/// key on its table (for row keys) and on its database (for row and table
/// keys), so that DDL on a table or database conflicts with every
/// transaction that touched it from an older snapshot. Sorted by
/// fingerprint, each fingerprint once; exclusive wins over shared.
pub fn certification_keys(keys: &[WriteSetKey]) -> Vec<CertKey> {
    let mut out = Vec::with_capacity(keys.len() + 4);
    // Write-sets touch few tables: hash each table's and database's scope
    // once per write-set.
    let mut tables: Vec<(&[u8], &[u8])> = Vec::new();
    let mut databases: Vec<&[u8]> = Vec::new();
    for key in keys {
        out.push(CertKey {
            fingerprint: fingerprint(&key.scope),
            kind: key.kind,
        });
        let (database, table) = match &key.scope {
            KeyScope::Database { .. } => (None, None),
            KeyScope::Table { database, .. } => (Some(database.as_slice()), None),
            KeyScope::Row {
                database, table, ..
            } => (Some(database.as_slice()), Some(table.as_slice())),
        };
        if let (Some(d), Some(t)) = (database, table)
            && !tables.contains(&(d, t))
        {
            tables.push((d, t));
            out.push(CertKey {
                fingerprint: table_fingerprint(d, t),
                kind: KeyKind::Shared,
            });
        }
        if let Some(d) = database
            && !databases.contains(&d)
        {
            databases.push(d);
            out.push(CertKey {
                fingerprint: database_fingerprint(d),
                kind: KeyKind::Shared,
            });
        }
    }
    // Exclusive sorts after shared: sort descending so that the first of
    // each run of equal fingerprints is the strongest hold, and keep it.
    out.sort_unstable_by_key(|k| std::cmp::Reverse((k.fingerprint, k.kind)));
    out.dedup_by_key(|k| k.fingerprint);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(table: &str, value: &str, kind: KeyKind) -> WriteSetKey {
        WriteSetKey {
            kind,
            scope: KeyScope::Row {
                database: b"db".to_vec(),
                table: table.as_bytes().to_vec(),
                index: "PRIMARY".into(),
                values: value.as_bytes().to_vec(),
            },
        }
    }

    #[test]
    fn scopes_at_different_levels_or_splits_differ() {
        let db = KeyScope::Database {
            database: b"ab".to_vec(),
        };
        let t1 = KeyScope::Table {
            database: b"a".to_vec(),
            table: b"b".to_vec(),
        };
        let t2 = KeyScope::Table {
            database: b"ab".to_vec(),
            table: b"".to_vec(),
        };
        assert_ne!(fingerprint(&db), fingerprint(&t1));
        assert_ne!(fingerprint(&t1), fingerprint(&t2));
        assert_ne!(fingerprint(&db), fingerprint(&t2));
    }

    #[test]
    fn rows_imply_shared_table_and_database_keys_once() {
        let keys = certification_keys(&[
            row("t", "1", KeyKind::Exclusive),
            row("t", "2", KeyKind::Exclusive),
            row("u", "1", KeyKind::Shared),
        ]);
        let table_t = fingerprint(&KeyScope::Table {
            database: b"db".to_vec(),
            table: b"t".to_vec(),
        });
        let database = fingerprint(&KeyScope::Database {
            database: b"db".to_vec(),
        });
        // 3 rows + 2 tables + 1 database, each once.
        assert_eq!(keys.len(), 6);
        assert!(keys.contains(&CertKey {
            fingerprint: table_t,
            kind: KeyKind::Shared
        }));
        assert!(keys.contains(&CertKey {
            fingerprint: database,
            kind: KeyKind::Shared
        }));
    }

    #[test]
    fn exclusive_wins_over_shared_for_the_same_key() {
        let keys = certification_keys(&[
            row("t", "1", KeyKind::Shared),
            row("t", "1", KeyKind::Exclusive),
            WriteSetKey {
                kind: KeyKind::Exclusive,
                scope: KeyScope::Table {
                    database: b"db".to_vec(),
                    table: b"t".to_vec(),
                },
            },
        ]);
        // row, table (exclusive beats the implied shared), database.
        assert_eq!(keys.len(), 3);
        assert_eq!(
            keys.iter().filter(|k| k.kind == KeyKind::Exclusive).count(),
            2
        );
    }
}
