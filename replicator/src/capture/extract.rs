//! From one captured `XA PREPARE` group to a write-set's content: the row
//! events to replay (without the replicator's own schema) and the
//! certification keys.
//!
//! Keys, per row event (see DESIGN.md, *Capture*):
//! - every primary/unique index entry of every row image (DELETE: before,
//!   WRITE: after, UPDATE: both), exclusive; a NULL in the entry gives no
//!   key; a value that cannot be normalized or keyed turns the table's
//!   row keys into one exclusive table key;
//! - for each foreign key of a written row (WRITE/UPDATE after image) whose
//!   columns are all non-NULL, a shared key on the parent's referenced
//!   unique index entry (or a shared parent table key if there is none);
//! - InnoDB's cascaded changes are not in the binlog (checked on 10.11: a
//!   `DELETE` of a parent with `ON DELETE CASCADE` children logs only the
//!   parent's row; the children's table map is logged, their rows are not),
//!   so a DELETE of a parent (or an UPDATE changing referenced columns) with
//!   a CASCADE / SET NULL / SET DEFAULT child takes an exclusive table key on
//!   that child and, transitively, on the children it may cascade to.
//!
//! Virtual generated columns *are* in the row images with
//! `binlog_row_image=FULL` (checked on 10.11: `v INT AS (id*2) VIRTUAL`
//! appears as its own column with its value), so the table map's column
//! count is compared with every column `information_schema` lists.
//!
//! Owns nothing persistent; reads metadata through [`SchemaCache`]. Must not
//! talk to the binlog stream.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mysql_async::binlog::BinlogVersion;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};

use super::events::{self, HEADER_LEN};
use super::image::{self, BinlogType, Image};
use super::schema::{SchemaCache, TableMeta};
use super::store::{GroupProblem, XaGroup};
use super::values::{ConvertError, KeyPart, key_part};
use super::{CaptureConfig, CaptureError, Captured};
use crate::certify::KeyKind;
use crate::keys::{RowKeyEncoder, RowKeyValues};
use crate::writeset::{Body, KeyScope, WriteSetKey};

/// Why one build attempt failed.
enum Failure {
    /// The metadata does not describe the table the events were written
    /// for: refresh it and try again once.
    Stale {
        database: String,
        table: String,
        reason: String,
    },
    Error(CaptureError),
}

impl From<CaptureError> for Failure {
    fn from(e: CaptureError) -> Self {
        Failure::Error(e)
    }
}

/// Keys in first-seen order, each once (and the encoder that builds row
/// key values).
#[derive(Default)]
struct KeySet {
    keys: Vec<WriteSetKey>,
    seen: HashSet<WriteSetKey>,
    encoder: RowKeyEncoder,
}

impl KeySet {
    fn push(&mut self, kind: KeyKind, scope: KeyScope) {
        let key = WriteSetKey { kind, scope };
        if self.seen.insert(key.clone()) {
            self.keys.push(key);
        }
    }

    fn table(&mut self, kind: KeyKind, database: &str, table: &str) {
        self.push(
            kind,
            KeyScope::Table {
                database: database.as_bytes().to_vec(),
                table: table.as_bytes().to_vec(),
            },
        );
    }

    fn row(&mut self, kind: KeyKind, database: &str, table: &str, index: &str, values: Vec<u8>) {
        self.push(
            kind,
            KeyScope::Row {
                database: database.as_bytes().to_vec(),
                table: table.as_bytes().to_vec(),
                index: index.to_string(),
                values,
            },
        );
    }
}

/// Build the write-set content of `group`, refreshing stale metadata once.
pub async fn build(
    config: &CaptureConfig,
    schema: &SchemaCache,
    group: &XaGroup,
) -> Result<Option<Captured>, CaptureError> {
    match &group.problem {
        Some(GroupProblem::TooLarge { bytes }) => {
            return Err(CaptureError::TooLarge {
                bytes: *bytes,
                limit: config.max_writeset_bytes,
            });
        }
        Some(GroupProblem::Unsupported(reason)) => {
            return Err(CaptureError::Unsupported(reason.clone()));
        }
        None => {}
    }
    let mut refreshed = false;
    loop {
        match build_once(config, schema, group).await {
            Ok(captured) => return Ok(captured),
            Err(Failure::Error(e)) => return Err(e),
            Err(Failure::Stale {
                database,
                table,
                reason,
            }) => {
                if refreshed {
                    return Err(CaptureError::Schema(format!(
                        "the row events of `{database}`.`{table}` in group {} do not match its \
                         metadata, even re-read: {reason}",
                        group.gtid
                    )));
                }
                tracing::info!(
                    gtid = %group.gtid,
                    database,
                    table,
                    %reason,
                    "row events do not match cached metadata; re-reading it"
                );
                schema.forget(&database, &table);
                refreshed = true;
            }
        }
    }
}

/// The payload being assembled: complete serialized events.
struct Payload {
    bytes: Vec<u8>,
    /// The last kept row event of the current statement, if it lacks the
    /// end-of-statement flag.
    open_statement: Option<Kept>,
    rows_events: usize,
}

/// Where a kept event is in the payload.
#[derive(Clone, Copy)]
struct Kept {
    start: usize,
    len: usize,
    checksummed: bool,
}

impl Payload {
    fn append(&mut self, event: &Event) -> Result<Kept, CaptureError> {
        let start = self.bytes.len();
        event
            .write(BinlogVersion::Version4, &mut self.bytes)
            .map_err(|e| CaptureError::Schema(format!("re-serializing a row event: {e}")))?;
        let len = self.bytes.len() - start;
        Ok(Kept {
            start,
            len,
            checksummed: len == HEADER_LEN + event.data().len() + 4,
        })
    }

    /// A dropped row event ended a statement: end it on the last kept one
    /// instead, so the replay frees its tables at the same point.
    fn end_statement(&mut self) {
        if let Some(kept) = self.open_statement.take() {
            let slot = &mut self.bytes[kept.start..kept.start + kept.len];
            events::set_rows_stmt_end(slot, kept.checksummed);
        }
    }
}

async fn build_once(
    config: &CaptureConfig,
    schema: &SchemaCache,
    group: &XaGroup,
) -> Result<Option<Captured>, Failure> {
    let own = config.own_schema.as_str();
    for (database, table) in &group.nontransactional {
        if database == own {
            continue;
        }
        let meta = schema.get(database, table).await?;
        if !meta.is_innodb() {
            return Err(CaptureError::NotInnodb {
                database: database.clone(),
                table: table.clone(),
                engine: meta.engine.clone(),
            }
            .into());
        }
    }

    let mut tables: HashMap<u64, (TableMapEvent<'_>, Vec<BinlogType>)> = HashMap::new();
    let mut own_tables: HashSet<u64> = HashSet::new();
    let mut keys = KeySet::default();
    let mut payload = Payload {
        bytes: Vec::new(),
        open_statement: None,
        rows_events: 0,
    };
    let mut cascades: Vec<(String, String)> = Vec::new();

    for event in &group.events {
        let data = event.read_data().map_err(|e| {
            CaptureError::Schema(format!("undecodable event in group {}: {e}", group.gtid))
        })?;
        match data {
            Some(EventData::TableMapEvent(tme)) => {
                let id = tme.table_id();
                if tme.database_name_raw() == own.as_bytes() {
                    own_tables.insert(id);
                    tables.remove(&id);
                    continue;
                }
                own_tables.remove(&id);
                let types = image::column_types(&tme).map_err(|e| {
                    CaptureError::Unsupported(format!(
                        "table `{}`.`{}`: {e}",
                        tme.database_name(),
                        tme.table_name()
                    ))
                })?;
                payload.append(event)?;
                tables.insert(id, (tme, types));
            }
            Some(EventData::RowsEvent(rows)) => {
                let id = rows.table_id();
                let statement_end = events::rows_stmt_end(event.data());
                if own_tables.contains(&id) {
                    if statement_end {
                        payload.end_statement();
                    }
                    continue;
                }
                let (tme, types) = tables.get(&id).ok_or_else(|| {
                    CaptureError::Schema(format!(
                        "row event for table id {id} without a table map in group {}",
                        group.gtid
                    ))
                })?;
                rows_keys(config, schema, tme, types, &rows, &mut keys, &mut cascades).await?;
                let at = payload.append(event)?;
                payload.rows_events += 1;
                payload.open_statement = if statement_end { None } else { Some(at) };
            }
            _ => {}
        }
    }

    cascade_keys(schema, own, cascades, &mut keys).await?;

    if payload.rows_events == 0 {
        return Ok(None);
    }
    let format_description = group.format_description.as_ref().clone();
    let bytes = format_description.len() + payload.bytes.len();
    if bytes > config.max_writeset_bytes {
        return Err(CaptureError::TooLarge {
            bytes,
            limit: config.max_writeset_bytes,
        }
        .into());
    }
    Ok(Some(Captured {
        keys: keys.keys,
        body: Body::Rows {
            format_description,
            events: payload.bytes,
        },
        bytes,
        gtid: group.gtid,
    }))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RowsKind {
    Write,
    Update,
    Delete,
}

/// Keys of one row event.
async fn rows_keys(
    config: &CaptureConfig,
    schema: &SchemaCache,
    tme: &TableMapEvent<'_>,
    types: &[BinlogType],
    rows: &RowsEventData<'_>,
    keys: &mut KeySet,
    cascades: &mut Vec<(String, String)>,
) -> Result<(), Failure> {
    let database = tme.database_name().into_owned();
    let table = tme.table_name().into_owned();
    let meta = schema.get(&database, &table).await?;
    if !meta.is_innodb() {
        return Err(CaptureError::NotInnodb {
            database,
            table,
            engine: meta.engine.clone(),
        }
        .into());
    }
    let stale = |reason: String| Failure::Stale {
        database: database.clone(),
        table: table.clone(),
        reason,
    };
    let n = meta.columns.len();
    if tme.columns_count() as usize != n || rows.num_columns() as usize != n {
        return Err(stale(format!(
            "the table map has {} columns, information_schema lists {n}",
            tme.columns_count()
        )));
    }
    let full_before = rows
        .columns_before_image()
        .is_none_or(|b| b.len() >= n && b[..n].all());
    let full_after = rows
        .columns_after_image()
        .is_none_or(|b| b.len() >= n && b[..n].all());
    if !full_before || !full_after {
        return Err(CaptureError::Schema(format!(
            "a row event of `{database}`.`{table}` lacks some columns: the server must run with \
             binlog_row_image=FULL"
        ))
        .into());
    }
    let table_key_only = if meta.has_primary_key() {
        false
    } else if config.allow_tables_without_pk {
        keys.table(KeyKind::Exclusive, &database, &table);
        true
    } else {
        return Err(CaptureError::NoPrimaryKey { database, table }.into());
    };
    let kind = match rows {
        RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => RowsKind::Write,
        RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => RowsKind::Update,
        RowsEventData::PartialUpdateRowsEvent(_) => {
            return Err(CaptureError::Unsupported(
                "partial update row events (a MySQL format) cannot be captured".into(),
            )
            .into());
        }
        RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => RowsKind::Delete,
    };

    // Parents of this table's foreign keys, looked up once per event.
    let mut parents: Vec<Option<Arc<TableMeta>>> = Vec::with_capacity(meta.foreign.len());
    if kind != RowsKind::Delete {
        for fk in &meta.foreign {
            if fk.parent_database == config.own_schema {
                parents.push(None);
                continue;
            }
            match schema.get(&fk.parent_database, &fk.parent_table).await {
                Ok(p) => parents.push(Some(p)),
                Err(e) => {
                    tracing::warn!(
                        database,
                        table,
                        foreign_key = fk.name,
                        error = %e,
                        "parent table metadata unavailable; using a shared table key"
                    );
                    keys.table(KeyKind::Shared, &fk.parent_database, &fk.parent_table);
                    parents.push(None);
                }
            }
        }
    }

    let mut whole_table = false;
    let mut referenced_changed = vec![false; meta.referenced_by.len()];
    let data = rows.rows_data();
    let (has_before, has_after) = (
        rows.columns_before_image().is_some(),
        rows.columns_after_image().is_some(),
    );
    let undecodable = |e: String| {
        Failure::Error(CaptureError::Unsupported(format!(
            "cannot decode a row of `{database}`.`{table}`: {e}"
        )))
    };
    let mut at = 0;
    while at < data.len() {
        let before = if has_before {
            Some(image::read_image(types, data, &mut at).map_err(undecodable)?)
        } else {
            None
        };
        let after = if has_after {
            Some(image::read_image(types, data, &mut at).map_err(undecodable)?)
        } else {
            None
        };
        if !table_key_only {
            for image in [before.as_ref(), after.as_ref()].into_iter().flatten() {
                image_keys(&meta, types, image, keys, &mut whole_table).map_err(stale)?;
            }
        }
        if let Some(after) = after.as_ref() {
            parent_keys(&meta, types, &parents, after, keys);
        }
        if let (Some(b), Some(a)) = (before.as_ref(), after.as_ref()) {
            for (i, child) in meta.referenced_by.iter().enumerate() {
                if !referenced_changed[i]
                    && child.parent_columns.iter().any(|&c| b.get(c) != a.get(c))
                {
                    referenced_changed[i] = true;
                }
            }
        }
    }
    if whole_table {
        keys.table(KeyKind::Exclusive, &database, &table);
    }
    for (i, child) in meta.referenced_by.iter().enumerate() {
        let changes = match kind {
            RowsKind::Delete => child.delete_changes_child,
            RowsKind::Update => child.update_changes_child && referenced_changed[i],
            RowsKind::Write => false,
        };
        if changes {
            cascades.push((child.child_database.clone(), child.child_table.clone()));
        }
    }
    Ok(())
}

fn value_at<'r>(
    image: &Image<'r>,
    types: &[BinlogType],
    pos: usize,
) -> Result<(Option<&'r [u8]>, BinlogType), String> {
    match (image.get(pos), types.get(pos)) {
        (Some(v), Some(t)) => Ok((*v, *t)),
        _ => Err(format!("the row image has no column {}", pos + 1)),
    }
}

/// Exclusive keys of every unique index entry of one row image.
fn image_keys(
    meta: &TableMeta,
    types: &[BinlogType],
    image: &Image<'_>,
    keys: &mut KeySet,
    whole_table: &mut bool,
) -> Result<(), String> {
    let mut parts: Vec<KeyPart> = Vec::new();
    'index: for index in &meta.unique {
        parts.clear();
        for &(pos, prefix) in &index.columns {
            let column = meta
                .columns
                .get(pos)
                .ok_or_else(|| format!("index {} names column {}", index.name, pos + 1))?;
            let (raw, ty) = value_at(image, types, pos)?;
            match key_part(raw, ty, &column.kind, prefix) {
                Ok(part) => parts.push(part),
                Err(ConvertError::Unkeyable(t)) => {
                    tracing::debug!(
                        table = meta.table,
                        index = index.name,
                        column_type = t,
                        "unkeyable column type; using a table key"
                    );
                    *whole_table = true;
                    continue 'index;
                }
                Err(ConvertError::Mismatch(m)) => {
                    return Err(format!("column `{}`: {m}", column.name));
                }
            }
        }
        let values: Vec<_> = parts.iter().map(KeyPart::as_column_value).collect();
        match keys.encoder.encode(&values) {
            Ok(RowKeyValues::Key(v)) => keys.row(
                KeyKind::Exclusive,
                &meta.database,
                &meta.table,
                &index.name,
                v,
            ),
            Ok(RowKeyValues::HasNull) => {}
            Err(_) => *whole_table = true,
        }
    }
    Ok(())
}

/// Shared keys on the parent rows a written child row references.
fn parent_keys(
    meta: &TableMeta,
    types: &[BinlogType],
    parents: &[Option<Arc<TableMeta>>],
    after: &Image<'_>,
    keys: &mut KeySet,
) {
    for (fk, parent) in meta.foreign.iter().zip(parents) {
        let Some(parent) = parent else { continue };
        let values: Result<Vec<_>, String> = fk
            .columns
            .iter()
            .map(|&c| value_at(after, types, c))
            .collect();
        let Ok(values) = values else {
            keys.table(KeyKind::Shared, &parent.database, &parent.table);
            continue;
        };
        if values.iter().any(|(raw, _)| raw.is_none()) {
            // A NULL in a foreign key references nothing.
            continue;
        }
        let index = parent.unique.iter().find(|ix| {
            ix.columns.len() == fk.parent_columns.len()
                && ix
                    .columns
                    .iter()
                    .zip(&fk.parent_columns)
                    .all(|(&(p, _), name)| {
                        parent
                            .columns
                            .get(p)
                            .is_some_and(|c| c.name.eq_ignore_ascii_case(name))
                    })
        });
        let Some(index) = index else {
            keys.table(KeyKind::Shared, &parent.database, &parent.table);
            continue;
        };
        // Encode with the parent's column types and collations, so the key
        // equals the one the parent row's own changes produce.
        let parts: Result<Vec<KeyPart>, ConvertError> = values
            .iter()
            .zip(&index.columns)
            .map(|(&(raw, ty), &(p, prefix))| match parent.columns.get(p) {
                Some(c) => key_part(raw, ty, &c.kind, prefix),
                None => Err(ConvertError::Mismatch("parent column missing".into())),
            })
            .collect();
        let encoded = parts.ok().and_then(|parts| {
            let values: Vec<_> = parts.iter().map(KeyPart::as_column_value).collect();
            keys.encoder.encode(&values).ok()
        });
        match encoded {
            Some(RowKeyValues::Key(v)) => keys.row(
                KeyKind::Shared,
                &parent.database,
                &parent.table,
                &index.name,
                v,
            ),
            Some(RowKeyValues::HasNull) => {}
            None => keys.table(KeyKind::Shared, &parent.database, &parent.table),
        }
    }
}

/// Exclusive table keys on every table InnoDB may change by cascading from
/// `start`, transitively.
async fn cascade_keys(
    schema: &SchemaCache,
    own: &str,
    start: Vec<(String, String)>,
    keys: &mut KeySet,
) -> Result<(), Failure> {
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut queue = start;
    while let Some((database, table)) = queue.pop() {
        if database == own || !seen.insert((database.clone(), table.clone())) {
            continue;
        }
        keys.table(KeyKind::Exclusive, &database, &table);
        let meta = schema.get(&database, &table).await?;
        for child in &meta.referenced_by {
            if child.delete_changes_child || child.update_changes_child {
                queue.push((child.child_database.clone(), child.child_table.clone()));
            }
        }
    }
    Ok(())
}
