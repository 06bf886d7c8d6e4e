//! Table metadata for key extraction, read from `information_schema` and
//! cached per table until [`SchemaCache::clear`] (after DDL).
//!
//! Owns the queries and the cache: columns (in binlog order), the primary
//! and unique indexes with prefix lengths, the engine, the foreign keys the
//! table holds, and those that reference it (with their cascade rules). It
//! must not decode row events or build keys (that is `keys`), and it only
//! ever reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::CaptureError;
use super::values::ColumnKind;

/// One column, in table (= binlog image) order.
#[derive(Debug, Clone)]
pub struct ColumnMeta {
    pub name: String,
    pub kind: ColumnKind,
}

/// A primary or unique index: column positions (0-based) and prefix lengths.
#[derive(Debug, Clone)]
pub struct IndexMeta {
    pub name: String,
    pub columns: Vec<(usize, Option<usize>)>,
}

/// A foreign key this table (the child) holds.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub name: String,
    /// Child column positions, in constraint order.
    pub columns: Vec<usize>,
    pub parent_database: String,
    pub parent_table: String,
    /// Referenced column names, in constraint order.
    pub parent_columns: Vec<String>,
}

/// A foreign key in another table (or this one) that references this table.
#[derive(Debug, Clone)]
pub struct ChildRef {
    pub child_database: String,
    pub child_table: String,
    /// Positions in *this* table of the referenced columns.
    pub parent_columns: Vec<usize>,
    /// ON UPDATE CASCADE / SET NULL / SET DEFAULT.
    pub update_changes_child: bool,
    /// ON DELETE CASCADE / SET NULL / SET DEFAULT.
    pub delete_changes_child: bool,
}

/// What key extraction needs to know about one table.
#[derive(Debug, Clone)]
pub struct TableMeta {
    pub database: String,
    pub table: String,
    pub engine: String,
    pub columns: Vec<ColumnMeta>,
    /// PRIMARY first, then the unique indexes by name.
    pub unique: Vec<IndexMeta>,
    pub foreign: Vec<ForeignKey>,
    pub referenced_by: Vec<ChildRef>,
}

impl TableMeta {
    pub fn has_primary_key(&self) -> bool {
        self.unique.iter().any(|i| i.name == "PRIMARY")
    }

    pub fn is_innodb(&self) -> bool {
        self.engine.eq_ignore_ascii_case("InnoDB")
    }
}

type TableName = (String, String);

/// Cached metadata, loaded on first use through a small connection pool.
pub struct SchemaCache {
    pool: mysql_async::Pool,
    timeout: Duration,
    inner: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// Bumped by `clear`: a load that started before a clear is not cached.
    generation: u64,
    tables: HashMap<TableName, Arc<TableMeta>>,
}

fn is_changing_rule(rule: &str) -> bool {
    matches!(
        rule.to_ascii_uppercase().as_str(),
        "CASCADE" | "SET NULL" | "SET DEFAULT"
    )
}

impl SchemaCache {
    pub fn new(pool: mysql_async::Pool, timeout: Duration) -> Self {
        Self {
            pool,
            timeout,
            inner: Mutex::new(CacheState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic while holding this lock leaves only a cache behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget every table (call after DDL).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.tables.clear();
    }

    /// Forget one table (its row events did not match what we had).
    pub fn forget(&self, database: &str, table: &str) {
        let mut state = self.lock();
        state.generation += 1;
        state
            .tables
            .remove(&(database.to_string(), table.to_string()));
    }

    /// The metadata of `database`.`table`, from the cache or the server.
    pub async fn get(&self, database: &str, table: &str) -> Result<Arc<TableMeta>, CaptureError> {
        let name = (database.to_string(), table.to_string());
        let generation = {
            let state = self.lock();
            if let Some(meta) = state.tables.get(&name) {
                return Ok(meta.clone());
            }
            state.generation
        };
        let meta = Arc::new(
            tokio::time::timeout(self.timeout, self.load(database, table))
                .await
                .map_err(|_| {
                    CaptureError::Schema(format!(
                        "reading the metadata of `{database}`.`{table}` took longer than {:?}",
                        self.timeout
                    ))
                })??,
        );
        tracing::debug!(
            database,
            table,
            columns = meta.columns.len(),
            unique_indexes = meta.unique.len(),
            foreign_keys = meta.foreign.len(),
            referenced_by = meta.referenced_by.len(),
            "loaded table metadata"
        );
        let mut state = self.lock();
        if state.generation == generation {
            state.tables.insert(name, meta.clone());
        }
        Ok(meta)
    }

    async fn load(&self, database: &str, table: &str) -> Result<TableMeta, CaptureError> {
        let sql_err = |what: &str| {
            let context = format!("reading {what} of `{database}`.`{table}`");
            move |e: mysql_async::Error| CaptureError::Schema(format!("{context}: {e}"))
        };
        let mut conn = self
            .pool
            .get_conn()
            .await
            .map_err(sql_err("a connection for the metadata"))?;
        let params = (database, table);

        let engine: Option<Option<String>> = conn
            .exec_first(
                "SELECT ENGINE FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                params,
            )
            .await
            .map_err(sql_err("the engine"))?;
        let Some(engine) = engine else {
            return Err(CaptureError::Schema(format!(
                "table `{database}`.`{table}` does not exist (dropped after the transaction?)"
            )));
        };

        let rows: Vec<(String, String, String, Option<String>)> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COLLATION_NAME \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                params,
            )
            .await
            .map_err(sql_err("the columns"))?;
        let columns: Vec<ColumnMeta> = rows
            .into_iter()
            .map(|(name, data_type, column_type, collation)| ColumnMeta {
                kind: ColumnKind::from_information_schema(
                    &data_type,
                    &column_type,
                    collation.as_deref(),
                ),
                name,
            })
            .collect();
        let position = |name: &str, what: &str| {
            columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    CaptureError::Schema(format!(
                        "{what} of `{database}`.`{table}` names column `{name}`, which \
                         information_schema.COLUMNS does not list"
                    ))
                })
        };

        let rows: Vec<(String, String, Option<u64>)> = conn
            .exec(
                "SELECT INDEX_NAME, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
                 ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
                params,
            )
            .await
            .map_err(sql_err("the unique indexes"))?;
        let mut unique: Vec<IndexMeta> = Vec::new();
        for (index, column, sub_part) in rows {
            let pos = position(&column, "an index")?;
            let prefix = sub_part.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            match unique.last_mut() {
                Some(last) if last.name == index => last.columns.push((pos, prefix)),
                _ => unique.push(IndexMeta {
                    name: index,
                    columns: vec![(pos, prefix)],
                }),
            }
        }

        let rows: Vec<(String, String, String, String, String)> = conn
            .exec(
                "SELECT CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA, \
                 REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME \
                 FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND REFERENCED_TABLE_NAME IS NOT NULL \
                 ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION",
                params,
            )
            .await
            .map_err(sql_err("the foreign keys"))?;
        let mut foreign: Vec<ForeignKey> = Vec::new();
        for (name, column, parent_database, parent_table, parent_column) in rows {
            let pos = position(&column, "a foreign key")?;
            match foreign.last_mut() {
                Some(last) if last.name == name => {
                    last.columns.push(pos);
                    last.parent_columns.push(parent_column);
                }
                _ => foreign.push(ForeignKey {
                    name,
                    columns: vec![pos],
                    parent_database,
                    parent_table,
                    parent_columns: vec![parent_column],
                }),
            }
        }

        let rows: Vec<(String, String, String, String, String, String)> = conn
            .exec(
                "SELECT k.TABLE_SCHEMA, k.TABLE_NAME, k.CONSTRAINT_NAME, \
                 k.REFERENCED_COLUMN_NAME, r.UPDATE_RULE, r.DELETE_RULE \
                 FROM information_schema.KEY_COLUMN_USAGE k \
                 JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
                 ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA \
                 AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME \
                 WHERE k.REFERENCED_TABLE_SCHEMA = ? AND k.REFERENCED_TABLE_NAME = ? \
                 ORDER BY k.TABLE_SCHEMA, k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
                params,
            )
            .await
            .map_err(sql_err("the foreign keys referencing it"))?;
        let mut referenced_by: Vec<(String, ChildRef)> = Vec::new();
        for (child_database, child_table, name, parent_column, update_rule, delete_rule) in rows {
            let pos = position(&parent_column, "a referencing foreign key")?;
            match referenced_by.last_mut() {
                Some((last_name, last))
                    if *last_name == name
                        && last.child_database == child_database
                        && last.child_table == child_table =>
                {
                    last.parent_columns.push(pos);
                }
                _ => referenced_by.push((
                    name,
                    ChildRef {
                        child_database,
                        child_table,
                        parent_columns: vec![pos],
                        update_changes_child: is_changing_rule(&update_rule),
                        delete_changes_child: is_changing_rule(&delete_rule),
                    },
                )),
            }
        }
        drop(conn);

        Ok(TableMeta {
            database: database.to_string(),
            table: table.to_string(),
            engine: engine.unwrap_or_default(),
            columns,
            unique,
            foreign,
            referenced_by: referenced_by.into_iter().map(|(_, c)| c).collect(),
        })
    }

    /// Close the pool's connections.
    pub async fn disconnect(&self) {
        let pool = self.pool.clone();
        if tokio::time::timeout(self.timeout, pool.disconnect())
            .await
            .is_err()
        {
            tracing::warn!("closing the metadata connections timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_that_change_child_rows() {
        for r in ["CASCADE", "SET NULL", "set default"] {
            assert!(is_changing_rule(r), "{r}");
        }
        for r in ["RESTRICT", "NO ACTION"] {
            assert!(!is_changing_rule(r), "{r}");
        }
    }
}
