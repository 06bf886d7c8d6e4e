//! The binlog tailer: a replica connection (COM_BINLOG_DUMP) to the local
//! server that reads every event group, keeps the `XA PREPARE` groups in the
//! [`Store`] for `take`, warns about data changes made outside the
//! replicator, and reconnects where it left off when the connection drops.
//!
//! Owns the dump connection, the current binlog file and position (the
//! end of the last completely read group, where a reconnect resumes), and
//! group assembly. It must not build keys or read table metadata (that
//! happens in `take`, off this task, so that one slow lookup never holds up
//! every other transaction's capture).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use mysql_async::binlog::BinlogVersion;
use mysql_async::binlog::events::{Event, QueryEvent, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::events::{self, GtidEvent, Xid, types};
use super::gtid::Gtid;
use super::store::{GroupProblem, XaGroup};

/// How often the server sends a heartbeat when it has nothing to send.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence (no event, no heartbeat) after which the connection is
/// considered dead and replaced.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Delays between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A binlog file and a position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: Vec<u8>,
    pub pos: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", String::from_utf8_lossy(&self.file), self.pos)
    }
}

/// Why reading stopped.
enum Ended {
    Shutdown,
    /// The connection failed: reconnect and resume.
    Lost(String),
    /// The binlog holds something this reader cannot handle: stop.
    Fatal(String),
}

/// A group being read.
struct Building {
    gtid: Gtid,
    head: GtidEvent,
    thread_id: Option<u32>,
    format_description: Arc<Vec<u8>>,
    events: Vec<Event>,
    bytes: usize,
    problem: Option<GroupProblem>,
    /// Table ids of this group's table maps.
    tables: HashMap<u64, (String, String)>,
    /// Tables with row events, outside the replicator's own schema.
    changed: Vec<(String, String)>,
    xa_prepare: Option<Xid>,
}

/// Open a dump connection reading from `at`.
pub async fn connect(
    opts: &mysql_async::Opts,
    server_id: u32,
    at: &Position,
    timeout: Duration,
) -> Result<BinlogStream, String> {
    let open = async {
        let mut conn = mysql_async::Conn::new(opts.clone()).await?;
        // Capability 4 (MARIA_SLAVE_CAPABILITY_MINE): send MariaDB's own
        // GTID events instead of replacing them with BEGIN queries.
        conn.query_drop(format!(
            "SET @mariadb_slave_capability = 4, @master_heartbeat_period = {}",
            HEARTBEAT.as_nanos()
        ))
        .await?;
        conn.get_binlog_stream(
            BinlogStreamRequest::new(server_id)
                .with_filename(&at.file)
                .with_pos(at.pos),
        )
        .await
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("opening the binlog dump at {at}: {e}")),
        Err(_) => Err(format!(
            "opening the binlog dump at {at} took longer than {timeout:?}"
        )),
    }
}

async fn next_event(stream: &mut BinlogStream) -> Option<Result<Event, mysql_async::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// Where a rotate event points. The fake rotate that starts a dump comes
/// before the format description, so the reader cannot know yet whether it
/// carries a checksum and leaves it on the name: strip it when it is one.
fn rotate_target(event: &Event) -> Result<Position, String> {
    let data = event.data();
    let pos = data
        .get(..8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .ok_or_else(|| format!("rotate event too short ({} bytes)", data.len()))?;
    let mut name = &data[8..];
    if name.len() >= 4 {
        let h = event.header();
        let mut whole = Vec::with_capacity(events::HEADER_LEN + data.len());
        whole.extend_from_slice(&h.timestamp().to_le_bytes());
        whole.push(h.event_type_raw());
        whole.extend_from_slice(&h.server_id().to_le_bytes());
        whole.extend_from_slice(&h.event_size().to_le_bytes());
        whole.extend_from_slice(&h.log_pos().to_le_bytes());
        whole.extend_from_slice(&h.flags_raw().to_le_bytes());
        whole.extend_from_slice(&data[..data.len() - 4]);
        let tail = &data[data.len() - 4..];
        if events::crc32(&whole).to_le_bytes() == tail {
            name = &name[..name.len() - 4];
        }
    }
    Ok(Position {
        file: name.to_vec(),
        pos,
    })
}

fn serialize(event: &Event) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(event.header().event_size() as usize);
    event
        .write(BinlogVersion::Version4, &mut out)
        .map_err(|e| format!("re-serializing a binlog event: {e}"))?;
    Ok(out)
}

/// The tailer task's state.
pub struct Tailer {
    shared: Arc<Shared>,
    opts: mysql_async::Opts,
    /// Where the current connection is (end of the last event read).
    at: Position,
    /// End of the last completely read group: where a reconnect resumes.
    resume: Position,
    format_description: Option<Arc<Vec<u8>>>,
    group: Option<Building>,
}

impl Tailer {
    pub fn new(shared: Arc<Shared>, opts: mysql_async::Opts, start: Position) -> Self {
        Self {
            shared,
            opts,
            at: start.clone(),
            resume: start,
            format_description: None,
            group: None,
        }
    }

    /// Read until shutdown (or a fatal error), reconnecting as needed.
    pub async fn run(mut self, first: BinlogStream, mut shutdown: watch::Receiver<bool>) {
        let shared = self.shared.clone();
        let config = &shared.config;
        let mut stream = Some(first);
        // Since when no connection has delivered an event.
        let mut failing_since: Option<Instant> = None;
        let mut backoff = BACKOFF_MIN;
        loop {
            let current = match stream.take() {
                Some(s) => s,
                None => {
                    let attempt = tokio::select! {
                        _ = shutdown.changed() => break,
                        r = connect(&self.opts, config.server_id, &self.resume, config.timeout) => r,
                    };
                    match attempt {
                        Ok(s) => s,
                        Err(reason) => {
                            self.note_failure(&mut failing_since, reason);
                            tokio::select! {
                                _ = shutdown.changed() => break,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            continue;
                        }
                    }
                }
            };
            let (ended, delivered) = self
                .follow(current, &mut shutdown, &mut failing_since)
                .await;
            match ended {
                Ended::Shutdown => break,
                Ended::Lost(reason) => {
                    if self.group.take().is_some() {
                        tracing::debug!(resume = %self.resume, "discarding a partly read group");
                    }
                    self.at = self.resume.clone();
                    self.note_failure(&mut failing_since, reason);
                    if delivered {
                        // It worked for a while: reconnect at once.
                        backoff = BACKOFF_MIN;
                    } else {
                        tokio::select! {
                            _ = shutdown.changed() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
                Ended::Fatal(reason) => {
                    tracing::error!(at = %self.at, %reason, "binlog capture stopped");
                    self.set_stopped(format!("binlog capture stopped at {}: {reason}", self.at));
                    return;
                }
            }
        }
        self.set_stopped("capture was shut down".into());
    }

    fn note_failure(&self, failing_since: &mut Option<Instant>, reason: String) {
        let down_for = failing_since.get_or_insert_with(Instant::now).elapsed();
        tracing::warn!(
            resume = %self.resume,
            %reason,
            down_for_ms = down_for.as_millis() as u64,
            "binlog dump connection lost; reconnecting"
        );
        if down_for >= self.shared.config.timeout {
            let mut store = self.shared.lock_store();
            if store.down.is_none() {
                store.down = Some(format!(
                    "cannot read the binlog since {down_for:?} (resume position {}): {reason}",
                    self.resume
                ));
                drop(store);
                self.shared.bump();
            }
        }
    }

    fn set_stopped(&self, reason: String) {
        self.shared.lock_store().stopped = Some(reason);
        self.shared.bump();
    }

    /// Read one connection's events until it fails or shutdown; also
    /// whether it delivered any event.
    async fn follow(
        &mut self,
        mut stream: BinlogStream,
        shutdown: &mut watch::Receiver<bool>,
        failing_since: &mut Option<Instant>,
    ) -> (Ended, bool) {
        let mut delivered = false;
        loop {
            let next = tokio::select! {
                _ = shutdown.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
                    return (Ended::Shutdown, delivered);
                }
                r = tokio::time::timeout(IDLE_TIMEOUT, next_event(&mut stream)) => r,
            };
            let event = match next {
                Err(_) => {
                    let reason =
                        format!("no event or heartbeat for {IDLE_TIMEOUT:?} at {}", self.at);
                    return (Ended::Lost(reason), delivered);
                }
                Ok(None) => {
                    let reason = "the server ended the binlog stream".to_string();
                    return (Ended::Lost(reason), delivered);
                }
                Ok(Some(Err(e))) => {
                    return (Ended::Lost(format!("reading the binlog: {e}")), delivered);
                }
                Ok(Some(Ok(event))) => event,
            };
            delivered = true;
            if let Some(since) = failing_since.take() {
                tracing::info!(
                    resume = %self.resume,
                    down_for_ms = since.elapsed().as_millis() as u64,
                    "binlog dump connection resumed"
                );
                let was_down = self.shared.lock_store().down.take().is_some();
                if was_down {
                    self.shared.bump();
                }
            }
            if let Err(reason) = self.handle(event) {
                return (Ended::Fatal(reason), delivered);
            }
        }
    }

    /// Process one event.
    fn handle(&mut self, event: Event) -> Result<(), String> {
        let header = event.header();
        let kind = header.event_type_raw();
        let real_position = header.log_pos() != 0
            && header.flags_raw() & events::LOG_EVENT_ARTIFICIAL_F == 0
            && kind != types::HEARTBEAT;
        match kind {
            types::ROTATE => {
                self.at = rotate_target(&event)?;
                if self.group.is_none() {
                    self.resume = self.at.clone();
                }
                tracing::debug!(at = %self.at, "binlog rotated");
                return Ok(());
            }
            types::FORMAT_DESCRIPTION => {
                self.format_description = Some(Arc::new(serialize(&event)?));
            }
            types::START_ENCRYPTION => {
                return Err(
                    "the binlog is encrypted (encrypt_binlog=ON), which capture cannot read".into(),
                );
            }
            types::GTID => self.start_group(&event)?,
            _ => {
                if self.group.is_some() {
                    self.group_event(event)?;
                }
            }
        }
        if real_position {
            self.at.pos = u64::from(header.log_pos());
            if self.group.is_none() {
                self.resume = self.at.clone();
            }
        }
        Ok(())
    }

    fn start_group(&mut self, event: &Event) -> Result<(), String> {
        let head = events::parse_gtid(event.data()).map_err(|e| format!("{e} at {}", self.at))?;
        let gtid = Gtid {
            domain: head.domain,
            server: event.header().server_id(),
            seq: head.seq,
        };
        if let Some(old) = self.group.take() {
            tracing::warn!(
                gtid = %old.gtid,
                next = %gtid,
                "binlog group ended without its final event; ignoring it"
            );
        }
        let format_description = self
            .format_description
            .clone()
            .ok_or_else(|| format!("group {gtid} before any format description event"))?;
        self.group = Some(Building {
            gtid,
            head,
            thread_id: None,
            format_description,
            events: Vec::new(),
            bytes: 0,
            problem: None,
            tables: HashMap::new(),
            changed: Vec::new(),
            xa_prepare: None,
        });
        Ok(())
    }

    fn group_event(&mut self, event: Event) -> Result<(), String> {
        let own_schema = self.shared.config.own_schema.as_str();
        let limit = self.shared.config.max_writeset_bytes;
        let Some(group) = self.group.as_mut() else {
            return Ok(());
        };
        let kind = event.header().event_type_raw();
        let mut ends = false;
        match kind {
            types::TABLE_MAP => {
                let tme: TableMapEvent<'_> = event
                    .read_event()
                    .map_err(|e| format!("unreadable table map in group {}: {e}", group.gtid))?;
                group.tables.insert(
                    tme.table_id(),
                    (
                        tme.database_name().into_owned(),
                        tme.table_name().into_owned(),
                    ),
                );
                if group.head.prepared_xa {
                    group.keep(event, limit);
                }
            }
            k if types::is_rows(k) || types::is_compressed_rows(k) => {
                let table_id = event
                    .data()
                    .get(..6)
                    .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0]));
                if let Some((db, table)) = table_id.and_then(|id| group.tables.get(&id))
                    && db != own_schema
                {
                    let name = (db.clone(), table.clone());
                    if !group.changed.contains(&name) {
                        group.changed.push(name);
                    }
                }
                if types::is_compressed_rows(k) && group.problem.is_none() {
                    group.problem = Some(GroupProblem::Unsupported(
                        "compressed row events (log_bin_compress=ON) cannot be captured".into(),
                    ));
                }
                // Only XA-prepare groups become write-sets; of the others
                // only the tables matter (for the warning).
                if group.head.prepared_xa {
                    group.keep(event, limit);
                }
            }
            types::QUERY => {
                let query: QueryEvent<'_> = event
                    .read_event()
                    .map_err(|e| format!("unreadable query event in group {}: {e}", group.gtid))?;
                group.thread_id = Some(query.thread_id());
                let text = query.query_raw().trim_ascii();
                ends = group.head.standalone
                    || text.eq_ignore_ascii_case(b"COMMIT")
                    || text.eq_ignore_ascii_case(b"ROLLBACK");
            }
            types::QUERY_COMPRESSED => ends = group.head.standalone,
            types::XID => ends = true,
            types::XA_PREPARE => {
                let xid = events::parse_xa_prepare(event.data())
                    .map_err(|e| format!("{e} in group {}", group.gtid))?;
                group.xa_prepare = Some(xid);
                ends = true;
            }
            _ => {}
        }
        if ends {
            self.finish_group();
        }
        Ok(())
    }

    fn finish_group(&mut self) {
        let Some(group) = self.group.take() else {
            return;
        };
        let gtid = group.gtid;
        let mut store = self.shared.lock_store();
        store.mark_processed(gtid);
        match (group.head.prepared_xa, group.xa_prepare) {
            (true, Some(xid)) => {
                tracing::debug!(
                    %gtid,
                    xid = %String::from_utf8_lossy(&xid.gtrid),
                    events = group.events.len(),
                    bytes = group.bytes,
                    "captured an XA PREPARE group"
                );
                store.insert(XaGroup {
                    gtid,
                    xid,
                    thread_id: group.thread_id,
                    format_description: group.format_description,
                    events: group.events,
                    bytes: group.bytes,
                    problem: group.problem,
                    nontransactional: Vec::new(),
                });
            }
            _ if !group.changed.is_empty() => {
                if let Some(thread) = group.thread_id {
                    store.note_nontransactional(thread, gtid, &group.changed);
                }
                let tables: Vec<String> = group
                    .changed
                    .iter()
                    .map(|(d, t)| format!("`{d}`.`{t}`"))
                    .collect();
                tracing::warn!(
                    %gtid,
                    tables = %tables.join(", "),
                    thread_id = group.thread_id,
                    "a data change was committed on the local server outside the replicator \
                     (not in an XA transaction): it was NOT replicated to the other nodes"
                );
            }
            _ => {}
        }
        drop(store);
        self.shared.bump();
    }
}

impl Building {
    /// Keep a table map or row event, or only count it once the group is
    /// over the size limit (it will be refused anyway).
    fn keep(&mut self, event: Event, limit: usize) {
        self.bytes += event.header().event_size() as usize;
        if self.bytes > limit {
            if !matches!(self.problem, Some(GroupProblem::Unsupported(_))) {
                self.problem = Some(GroupProblem::TooLarge { bytes: self.bytes });
            }
            self.events = Vec::new();
        } else {
            self.events.push(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::binlog::events::FormatDescriptionEvent;

    fn rotate(name: &[u8], checksum: bool) -> Event {
        let size = events::HEADER_LEN + 8 + name.len() + if checksum { 4 } else { 0 };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.push(types::ROTATE);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(size as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&events::LOG_EVENT_ARTIFICIAL_F.to_le_bytes());
        bytes.extend_from_slice(&1355u64.to_le_bytes());
        bytes.extend_from_slice(name);
        if checksum {
            let crc = events::crc32(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
        }
        // The default format description knows no checksum, like the
        // reader at the start of a dump.
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        Event::read(&fde, &bytes[..]).unwrap()
    }

    #[test]
    fn the_fake_rotate_checksum_is_not_part_of_the_name() {
        for checksum in [false, true] {
            let at = rotate_target(&rotate(b"binlog.000001", checksum)).unwrap();
            assert_eq!(
                at,
                Position {
                    file: b"binlog.000001".to_vec(),
                    pos: 1355
                },
                "checksum {checksum}"
            );
        }
        assert_eq!(rotate_target(&rotate(b"b", false)).unwrap().file, b"b");
    }
}
