//! The statement classes of a session's prepared statements, so that
//! executing one is handled like the statement it was prepared from.
//! Pure bookkeeping: no I/O; the session tells it what the server
//! answered.
//!
//! - Binary protocol (`COM_STMT_PREPARE` / `COM_STMT_EXECUTE`, MariaDB's
//!   bulk execute): by statement id. The id `0xFFFFFFFF` means "the
//!   statement prepared last" (MariaDB's `LAST_STMT_ID`, used by clients
//!   that send prepare and execute in one pipeline): the last
//!   `COM_STMT_PREPARE` that succeeded, none after one that failed or
//!   after that statement was closed — as the server does.
//! - SQL level (`PREPARE name FROM …` / `EXECUTE name`): by name. MariaDB
//!   compares names case-insensitively in its own collation; only names of
//!   printable ASCII are remembered (compared ignoring ASCII case). Any
//!   other name may be equal, to the server, to one remembered, so
//!   preparing or dropping it forgets every SQL-level class.
//!
//! What is not known is [`StatementClass::Write`], the conservative answer:
//! it is run inside an XA transaction and ends through the cluster.

use std::collections::HashMap;

use super::classify::StatementClass;

/// MariaDB's "the statement prepared last" in `COM_STMT_*` commands.
pub const LAST_STATEMENT: u32 = 0xFFFF_FFFF;

/// The classes of one session's prepared statements.
#[derive(Debug, Default)]
pub struct Prepared {
    by_id: HashMap<u32, StatementClass>,
    /// The statement of the last successful `COM_STMT_PREPARE`, while it
    /// is open.
    last: Option<u32>,
    by_name: HashMap<Vec<u8>, StatementClass>,
}

impl Prepared {
    /// A `COM_STMT_PREPARE` of a statement of `class` was answered: with
    /// its id, or `None` when the server refused it.
    pub fn prepared(&mut self, id: Option<u32>, class: StatementClass) {
        self.last = id;
        if let Some(id) = id {
            self.by_id.insert(id, class);
        }
    }

    /// The class of statement `id` of a `COM_STMT_EXECUTE` /
    /// `COM_STMT_BULK_EXECUTE`.
    pub fn class_of(&self, id: u32) -> StatementClass {
        self.resolve(id)
            .and_then(|id| self.by_id.get(&id))
            .cloned()
            .unwrap_or(StatementClass::Write)
    }

    /// `COM_STMT_CLOSE` of statement `id`.
    pub fn closed(&mut self, id: u32) {
        if let Some(id) = self.resolve(id) {
            self.by_id.remove(&id);
            if self.last == Some(id) {
                self.last = None;
            }
        }
    }

    fn resolve(&self, id: u32) -> Option<u32> {
        if id == LAST_STATEMENT {
            self.last
        } else {
            Some(id)
        }
    }

    /// `PREPARE name FROM …` succeeded with a statement of `class`.
    pub fn sql_prepared(&mut self, name: &[u8], class: StatementClass) {
        match plain_name(name) {
            Some(key) => {
                self.by_name.insert(key, class);
            }
            None => self.by_name.clear(),
        }
    }

    /// `DEALLOCATE PREPARE name` / `DROP PREPARE name`.
    pub fn sql_deallocated(&mut self, name: &[u8]) {
        match plain_name(name) {
            Some(key) => {
                self.by_name.remove(&key);
            }
            None => self.by_name.clear(),
        }
    }

    /// The class of `EXECUTE name`.
    pub fn sql_class_of(&self, name: &[u8]) -> StatementClass {
        plain_name(name)
            .and_then(|key| self.by_name.get(&key))
            .cloned()
            .unwrap_or(StatementClass::Write)
    }

    /// The session was reset (COM_CHANGE_USER, COM_RESET_CONNECTION): the
    /// server dropped every prepared statement.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The key of a name of printable ASCII (lowercased); `None` for others.
fn plain_name(name: &[u8]) -> Option<Vec<u8>> {
    (!name.is_empty() && name.iter().all(|b| b.is_ascii_graphic()))
        .then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementClass::{Read, Write};

    #[test]
    fn the_last_statement_id_means_the_last_prepared_statement() {
        let mut p = Prepared::default();
        p.prepared(Some(1), Write);
        p.prepared(Some(2), Read);
        assert_eq!(p.class_of(LAST_STATEMENT), Read);
        assert_eq!(p.class_of(1), Write);
        assert_eq!(p.class_of(2), Read);
        // A failed prepare leaves no last statement (the server clears it).
        p.prepared(None, Read);
        assert_eq!(p.class_of(LAST_STATEMENT), Write);
        assert_eq!(p.class_of(2), Read);
        // Closing the last statement, by its id or as the last one.
        p.prepared(Some(3), Read);
        p.closed(3);
        assert_eq!(p.class_of(LAST_STATEMENT), Write);
        assert_eq!(p.class_of(3), Write);
        p.prepared(Some(4), Read);
        p.closed(LAST_STATEMENT);
        assert_eq!(p.class_of(4), Write);
        assert_eq!(p.class_of(LAST_STATEMENT), Write);
        // Closing another statement keeps the last one.
        p.prepared(Some(5), Read);
        p.closed(2);
        assert_eq!(p.class_of(LAST_STATEMENT), Read);
        assert_eq!(p.class_of(2), Write);
        p.clear();
        assert_eq!(p.class_of(LAST_STATEMENT), Write);
        assert_eq!(p.class_of(5), Write);
    }

    #[test]
    fn sql_names_compare_ignoring_ascii_case() {
        let mut p = Prepared::default();
        p.sql_prepared(b"MyStmt", Read);
        assert_eq!(p.sql_class_of(b"mystmt"), Read);
        assert_eq!(p.sql_class_of(b"MYSTMT"), Read);
        p.sql_deallocated(b"mySTMT");
        assert_eq!(p.sql_class_of(b"mystmt"), Write);
    }

    #[test]
    fn other_names_are_never_trusted_and_may_shadow_any() {
        let mut p = Prepared::default();
        p.sql_prepared(b"s", Read);
        // To MariaDB, '\xc5\xbf' (LATIN SMALL LETTER LONG S) may equal 's':
        // preparing it may replace `s`, so `s` is no longer known.
        p.sql_prepared("\u{17f}".as_bytes(), Read);
        assert_eq!(p.sql_class_of(b"s"), Write);
        assert_eq!(p.sql_class_of("\u{17f}".as_bytes()), Write);
        p.sql_prepared(b"t", Read);
        p.sql_deallocated(b"t \xe9");
        assert_eq!(p.sql_class_of(b"t"), Write);
        p.sql_prepared(b"with space", Read);
        assert_eq!(p.sql_class_of(b"with space"), Write);
    }
}
