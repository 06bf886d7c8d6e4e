//! Capture: turns the binlog group that a client transaction's
//! `XA PREPARE` wrote into a write-set's content (row events to replay and
//! certification keys). See DESIGN.md, *Capture: XA + binlog*.
//!
//! A [`Capture`] tails the local server's binlog as a replica in a
//! background task (following rotations, reconnecting and resuming at the
//! last completely read group) and keeps each `XA PREPARE` group until the
//! proxy [`Capture::take`]s it by xid and GTID. Keys are built at `take`,
//! from `information_schema` metadata cached per table.
//!
//! # Layout
//!
//! - [`gtid`] — [`Gtid`] and GTID positions.
//! - `events` — MariaDB event bodies `mysql_common` does not decode.
//! - `tailer` — the dump connection and group assembly.
//! - `store` — captured groups awaiting `take`, and their retention.
//! - `schema` — table metadata from `information_schema`, cached.
//! - `image` — row images: value lengths and formats.
//! - `values` — stored values to key values.
//! - `extract` — a group to keys and payload.
//! - [`replay`] — the `BINLOG '…'` statements that replay a payload.
//!
//! Owns the binlog dump connection and the metadata connections; must not
//! touch client sessions, certification or the ordered log, and never
//! writes to the server.

mod events;
mod extract;
pub mod gtid;
mod image;
pub mod replay;
mod schema;
mod store;
mod tailer;
mod values;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::sync::watch;

pub use gtid::{Gtid, ParseGtidError};

use crate::writeset::{Body, WriteSetKey};
use schema::SchemaCache;
use store::{Lookup, Store};
use tailer::{Position, Tailer};

/// How long a `take` still waits once the tailer is known to be down (one
/// more reconnection attempt) before failing with `Stopped`.
const DOWN_GRACE: Duration = Duration::from_secs(3);

/// Smallest byte budget for captured groups awaiting `take` (see `store`).
const MIN_RETAIN_BYTES: usize = 256 << 20;

/// How capture runs.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Server id of the binlog dump connection (must differ from the
    /// server's own and from any real replica's).
    pub server_id: u32,
    /// Replicate writes to tables without a primary key with a whole-table
    /// key (false: refuse them).
    pub allow_tables_without_pk: bool,
    /// Groups whose events exceed this many bytes are refused.
    pub max_writeset_bytes: usize,
    /// The replicator's own database: never captured (neither payload nor
    /// keys).
    pub own_schema: String,
    /// How long `take` waits for a group, and the limit of every
    /// connection attempt and metadata query.
    pub timeout: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            server_id: 4_000_000_001,
            allow_tables_without_pk: false,
            max_writeset_bytes: 64 << 20,
            own_schema: "replicator".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a transaction changed, ready to go in a write-set.
#[derive(Debug, Clone)]
pub struct Captured {
    pub keys: Vec<WriteSetKey>,
    /// [`Body::Rows`]: the format description event, and the table map and
    /// row events in binlog order, each complete (header, body, checksum
    /// if the server writes them), without the own schema's events.
    pub body: Body,
    /// Size of the body's two byte strings together.
    pub bytes: usize,
    pub gtid: Gtid,
}

fn printable(xid: &[u8]) -> String {
    String::from_utf8_lossy(xid).into_owned()
}

/// Why a transaction's changes could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "table `{database}`.`{table}` has no primary key: writes to it are refused (set \
         allow_tables_without_pk to replicate it with table-level conflict detection)"
    )]
    NoPrimaryKey { database: String, table: String },
    #[error(
        "table `{database}`.`{table}` uses the {engine} storage engine: only InnoDB tables can be \
         replicated (ALTER TABLE … ENGINE=InnoDB)"
    )]
    NotInnodb {
        database: String,
        table: String,
        engine: String,
    },
    #[error("the transaction's changes take {bytes} bytes, more than the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error(
        "the binlog group of XA transaction '{}' (GTID {gtid}) was not read within the capture \
         timeout", printable(.xid)
    )]
    Timeout { xid: Vec<u8>, gtid: Gtid },
    #[error(
        "the binlog group of XA transaction '{}' (GTID {gtid}) was captured but dropped before it \
         was taken (taken too late)", printable(.xid)
    )]
    Expired { xid: Vec<u8>, gtid: Gtid },
    #[error("table metadata: {0}")]
    Schema(String),
    #[error("binlog capture is not running: {0}")]
    Stopped(String),
    #[error("cannot capture: {0}")]
    Unsupported(String),
    #[error("capture is misconfigured: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Server {
        context: String,
        #[source]
        source: mysql_async::Error,
    },
}

/// State shared by the tailer task and `take`.
pub(crate) struct Shared {
    config: CaptureConfig,
    store: Mutex<Store>,
    /// Bumped whenever the store changes; `take` waits on it.
    progress: watch::Sender<u64>,
    schema: SchemaCache,
}

impl Shared {
    fn lock_store(&self) -> std::sync::MutexGuard<'_, Store> {
        // The store stays consistent at every unlock; a panic elsewhere
        // while holding it must not stop capture.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }
}

struct Inner {
    shared: Arc<Shared>,
    /// Dropping it (last `Capture` gone) stops the tailer too.
    shutdown: watch::Sender<bool>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The capture service; cheap to clone.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("config", &self.inner.shared.config)
            .finish_non_exhaustive()
    }
}

async fn query_first<T: mysql_async::prelude::FromRow + Send + 'static>(
    conn: &mut mysql_async::Conn,
    sql: &str,
    timeout: Duration,
) -> Result<Option<T>, CaptureError> {
    match tokio::time::timeout(timeout, conn.query_first(sql)).await {
        Ok(Ok(row)) => Ok(row),
        Ok(Err(source)) => Err(CaptureError::Server {
            context: format!("running `{sql}`"),
            source,
        }),
        Err(_) => Err(CaptureError::Stopped(format!(
            "`{sql}` took longer than {timeout:?}"
        ))),
    }
}

impl Capture {
    /// Check the server's settings, find the current end of its binlog and
    /// start tailing from there in a background task. `opts` is an account
    /// with REPLICATION SLAVE, BINLOG MONITOR (for `SHOW MASTER STATUS`)
    /// and SELECT on the replicated tables (whose metadata it reads from
    /// `information_schema`).
    pub async fn start(
        opts: mysql_async::Opts,
        config: CaptureConfig,
    ) -> Result<Self, CaptureError> {
        let timeout = config.timeout;
        let mut conn =
            match tokio::time::timeout(timeout, mysql_async::Conn::new(opts.clone())).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(source)) => {
                    return Err(CaptureError::Server {
                        context: "connecting for binlog capture".into(),
                        source,
                    });
                }
                Err(_) => {
                    return Err(CaptureError::Stopped(format!(
                        "connecting for binlog capture took longer than {timeout:?}"
                    )));
                }
            };
        let settings: Option<(u32, String, String, u32)> = query_first(
            &mut conn,
            "SELECT @@server_id, @@binlog_format, @@binlog_row_image, @@log_bin",
            timeout,
        )
        .await?;
        let Some((server_id, format, image, log_bin)) = settings else {
            return Err(CaptureError::Config(
                "the server returned no settings".into(),
            ));
        };
        if log_bin != 1
            || !format.eq_ignore_ascii_case("ROW")
            || !image.eq_ignore_ascii_case("FULL")
        {
            return Err(CaptureError::Config(format!(
                "the server must run with log_bin, binlog_format=ROW and binlog_row_image=FULL \
                 (it has log_bin={log_bin}, binlog_format={format}, binlog_row_image={image})"
            )));
        }
        if server_id == config.server_id {
            return Err(CaptureError::Config(format!(
                "the capture server_id {} is the server's own",
                config.server_id
            )));
        }
        // The end of the binlog, then the GTID position exactly there: every
        // group after it will be read.
        let status: Option<mysql_async::Row> =
            query_first(&mut conn, "SHOW MASTER STATUS", timeout).await?;
        let Some((file, pos)) = status.and_then(|row| {
            let file: Option<Vec<u8>> = row.get(0);
            let pos: Option<u64> = row.get(1);
            file.zip(pos)
        }) else {
            return Err(CaptureError::Config(
                "SHOW MASTER STATUS returned nothing: is the binlog enabled?".into(),
            ));
        };
        let file_text = String::from_utf8_lossy(&file).into_owned();
        let gtid_pos: Option<String> = query_first(
            &mut conn,
            &format!(
                "SELECT BINLOG_GTID_POS('{}', {pos})",
                file_text.replace('\\', "\\\\").replace('\'', "''")
            ),
            timeout,
        )
        .await?;
        let position = gtid::parse_position(gtid_pos.as_deref().unwrap_or(""))
            .map_err(|e| CaptureError::Config(format!("reading the binlog GTID position: {e}")))?;
        let _ = tokio::time::timeout(timeout, conn.disconnect()).await;

        let start = Position { file, pos };
        let stream = tailer::connect(&opts, config.server_id, &start, timeout)
            .await
            .map_err(CaptureError::Stopped)?;
        tracing::info!(
            start = %start,
            gtid_position = gtid_pos.as_deref().unwrap_or(""),
            server_id = config.server_id,
            "binlog capture started"
        );

        let pool_opts = mysql_async::OptsBuilder::from_opts(opts.clone()).pool_opts(
            mysql_async::PoolOpts::default()
                .with_constraints(mysql_async::PoolConstraints::new(0, 4).unwrap_or_default()),
        );
        let retain_bytes = MIN_RETAIN_BYTES.max(config.max_writeset_bytes.saturating_mul(2));
        let shared = Arc::new(Shared {
            schema: SchemaCache::new(mysql_async::Pool::new(pool_opts), timeout),
            store: Mutex::new(Store::new(&position, retain_bytes)),
            progress: watch::channel(0).0,
            config,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(Tailer::new(shared.clone(), opts, start).run(stream, shutdown_rx));
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                shutdown,
                task: tokio::sync::Mutex::new(Some(task)),
            }),
        })
    }

    /// After `XA PREPARE` of `xid` (the gtrid bytes) returned and
    /// `@@last_gtid` was read as `last_gtid` (`None` if empty): wait until
    /// the tailer has read the group with that GTID (or a later one). If
    /// that group is the XA prepare of `xid`, return its write-set content;
    /// otherwise the transaction binlogged nothing: `Ok(None)`. Also
    /// `Ok(None)` if it only changed the replicator's own schema.
    ///
    /// Each group can be taken once: a second `take` of it (e.g. a retry
    /// after an error) returns `Ok(None)`, so after an error roll the
    /// transaction back. A group never taken is dropped after
    /// `store::RETAIN_SEQS` later groups (or under memory pressure); its
    /// `take` then fails with [`CaptureError::Expired`], for up to
    /// `store::TOMBSTONE_SEQS` groups, and after that reports `Ok(None)`:
    /// call `take` right after `XA PREPARE`.
    pub async fn take(
        &self,
        xid: &[u8],
        last_gtid: Option<Gtid>,
    ) -> Result<Option<Captured>, CaptureError> {
        let Some(gtid) = last_gtid else {
            return Ok(None);
        };
        let shared = &self.inner.shared;
        let deadline = tokio::time::Instant::now() + shared.config.timeout;
        let mut progress = shared.progress.subscribe();
        let mut down_deadline: Option<tokio::time::Instant> = None;
        let group = loop {
            {
                let mut store = shared.lock_store();
                if let Some(reason) = &store.stopped {
                    return Err(CaptureError::Stopped(reason.clone()));
                }
                match store.take(gtid, xid) {
                    Lookup::Found(group) => break group,
                    Lookup::NotCaptured => return Ok(None),
                    Lookup::Expired => {
                        return Err(CaptureError::Expired {
                            xid: xid.to_vec(),
                            gtid,
                        });
                    }
                    Lookup::Pending => {}
                }
                if store.down.is_some() {
                    // The tailer has been failing for a whole timeout: give
                    // it one more reconnection attempt, then fail fast.
                    let grace = tokio::time::Instant::now() + DOWN_GRACE;
                    down_deadline.get_or_insert(grace.min(deadline));
                } else {
                    down_deadline = None;
                }
            }
            let wait_until = down_deadline.unwrap_or(deadline);
            match tokio::time::timeout_at(wait_until, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(CaptureError::Stopped("capture was shut down".into())),
                Err(_) => {
                    if let Some(reason) = shared.lock_store().down.clone() {
                        return Err(CaptureError::Stopped(reason));
                    }
                    if tokio::time::Instant::now() < deadline {
                        // Recovered just now: keep waiting.
                        down_deadline = None;
                        continue;
                    }
                    return Err(CaptureError::Timeout {
                        xid: xid.to_vec(),
                        gtid,
                    });
                }
            }
        };
        let captured = extract::build(&shared.config, &shared.schema, &group).await;
        match &captured {
            Ok(Some(c)) => tracing::debug!(
                %gtid,
                xid = %printable(xid),
                keys = c.keys.len(),
                bytes = c.bytes,
                "took a captured transaction"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::info!(%gtid, xid = %printable(xid), error = %e, "capture refused a transaction")
            }
        }
        captured
    }

    /// Drop cached table metadata (call after any DDL).
    pub fn schema_changed(&self) {
        self.inner.shared.schema.clear();
    }

    /// Stop the tailer and close the connections. Pending and later `take`s
    /// fail with [`CaptureError::Stopped`].
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let task = self.inner.task.lock().await.take();
        if let Some(mut task) = task {
            let timeout = self.inner.shared.config.timeout;
            if tokio::time::timeout(timeout, &mut task).await.is_err() {
                tracing::warn!("binlog tailer did not stop in time; aborting it");
                task.abort();
            }
        }
        {
            let mut store = self.inner.shared.lock_store();
            store
                .stopped
                .get_or_insert_with(|| "capture was shut down".into());
        }
        self.inner.shared.bump();
        self.inner.shared.schema.disconnect().await;
        tracing::info!("binlog capture stopped");
    }
}
