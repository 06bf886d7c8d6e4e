//! The commit pipeline of a node: reads the ordered log, certifies every
//! write-set (the same verdicts on every node), tells each waiting local
//! session its verdict, keeps commits in seqno order, resolves prepared
//! transactions nobody waits for any more, and implements the proxy's
//! [`CommitService`] (capture → propose → verdict → turn).
//!
//! Owns the certifier, the commit order, the durable position file and the
//! dispatch of other nodes' write-sets to the appliers (each starts once
//! its dependencies committed, and commits in its turn). It does not talk
//! to clients (the proxy does) nor run SQL to apply (the applier does).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use group::{Committed, GroupError, GroupMember};
use mysql_async::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::Holder;
use crate::apply::{Applier, ToiOutcome};
use crate::capture::{Capture, CaptureError, Gtid};
use crate::certify::{Certifier, Failure, Mode, Verdict};
use crate::keys::certification_keys;
use crate::proxy::shutdown::{Shutdown, StopPhase};
use crate::proxy::transaction::{
    BoxFuture, CommitError, CommitService, Decision, ER_DEADLOCK, LockClaim,
};
use crate::writeset::{Body, LogEntry, TOIStatement, WriteSet};

use super::auto_increment::AutoIncrement;
use super::order::CommitOrder;
use super::prepared::{Ended, PreparedResolver};
use super::seen::{FirstSeen, Seen};
use super::sync_state::{Sample, SyncState};

/// How long the pipeline keeps trying to end a prepared transaction the
/// log decided before it stops the node (a restart resolves it).
const RESOLVE_PATIENCE: Duration = Duration::from_secs(60);

/// What the log decided for a local transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivered {
    Certified {
        seqno: u64,
        verdict: Verdict,
    },
    /// Its origin abandoned it before its write-set was ordered.
    Abandoned,
    /// Its write-set was ordered before the abandon marker, at this seqno
    /// (the pipeline resolves it in turn).
    OrderedEarlier(u64),
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub node_id: u64,
    /// Certification window in seqnos (and the duplicate-detection window).
    pub window: u64,
    /// How long a commit may wait for the log before its outcome is
    /// declared unknown.
    pub commit_timeout: Duration,
    /// Largest write-set accepted, in bytes.
    pub max_writeset_bytes: usize,
    /// Where the durable position is kept.
    pub position_file: PathBuf,
    /// Write-sets applied at once, at most.
    pub apply_threads: usize,
}

/// A write-set this node applies (another node's, or its own total-order
/// statement whose session is gone).
struct ApplyWork {
    seqno: u64,
    apply_after: u64,
    write_set: WriteSet,
}

/// Shared state of the pipeline.
pub struct Pipeline {
    config: PipelineConfig,
    member: GroupMember,
    capture: Capture,
    /// The replicator's own connections (XA RECOVER).
    admin: mysql_async::Pool,
    /// Ends prepared transactions whose sessions cannot.
    resolver: PreparedResolver,
    applier: Applier,
    /// Highest seqno the database holds by its applied position at start:
    /// write-sets at or below it are not applied again.
    applied_at_start: u64,
    apply_queue: mpsc::UnboundedSender<ApplyWork>,
    apply_queue_rx: Mutex<Option<mpsc::UnboundedReceiver<ApplyWork>>>,
    /// Write-sets waiting to be applied or being applied.
    recv_queue: AtomicU64,
    /// Other nodes' write-sets that passed certification.
    received: AtomicU64,
    /// Local transactions committed by replay.
    replays_done: AtomicU64,
    /// Total-order statements that failed here.
    toi_failures: AtomicU64,
    order: Mutex<CommitOrder>,
    /// Last committed seqno; every change also wakes sessions waiting for
    /// their turn.
    committed: watch::Sender<u64>,
    waiters: Mutex<HashMap<Vec<u8>, oneshot::Sender<Delivered>>>,
    /// Highest seqno the delivery loop has processed.
    processed: watch::Sender<u64>,
    xid_boot: u64,
    xid_counter: AtomicU64,
    /// This node's write-sets ordered (first copies), and how many of them
    /// failed certification.
    replicated: AtomicU64,
    cert_failures: AtomicU64,
    /// Set when something outside the delivery loop must stop the node.
    stopped: watch::Sender<Option<String>>,
    /// Write-sets of local transactions to replay, by xid.
    replays: Mutex<HashMap<Vec<u8>, (u64, Body)>>,
    /// Verdicts of this node's write-sets re-read at start-up at or below
    /// the recorded position, by xid: recovery resolves one still
    /// prepared by its verdict instead of abandoning it.
    replayed_own: Mutex<HashMap<Vec<u8>, (u64, Verdict)>>,
    /// Joined/Synced and flow-control time, from periodic samples.
    sync: Mutex<SyncState>,
}

/// A condition that must stop the node: continuing could make this
/// replica diverge from the others.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Read the durable position (0 for a new node).
pub fn read_position(path: &std::path::Path) -> Result<u64, Fatal> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|e| {
            Fatal(format!(
                "position file {} is corrupt ({e}): refusing to guess where this node is",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Fatal(format!("reading {}: {e}", path.display()))),
    }
}

impl Pipeline {
    /// A pipeline whose commits up to `position` are already done, and
    /// whose database holds every write-set up to `applied`.
    pub fn new(
        config: PipelineConfig,
        member: GroupMember,
        capture: Capture,
        admin: mysql_async::Pool,
        applier: Applier,
        position: u64,
        applied: u64,
    ) -> Arc<Self> {
        let (apply_queue, apply_queue_rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            config,
            member,
            capture,
            applier,
            applied_at_start: applied,
            apply_queue,
            apply_queue_rx: Mutex::new(Some(apply_queue_rx)),
            recv_queue: AtomicU64::new(0),
            received: AtomicU64::new(0),
            replays_done: AtomicU64::new(0),
            toi_failures: AtomicU64::new(0),
            resolver: PreparedResolver::new(admin.clone(), RESOLVE_PATIENCE),
            admin,
            order: Mutex::new(CommitOrder::new(position)),
            committed: watch::channel(position).0,
            waiters: Mutex::new(HashMap::new()),
            processed: watch::channel(0).0,
            xid_boot: rand::random(),
            xid_counter: AtomicU64::new(0),
            replicated: AtomicU64::new(0),
            cert_failures: AtomicU64::new(0),
            stopped: watch::channel(None).0,
            replayed_own: Mutex::new(HashMap::new()),
            replays: Mutex::new(HashMap::new()),
            sync: Mutex::new(SyncState::new(std::time::Instant::now())),
        })
    }

    fn xid_prefix(&self) -> String {
        format!("rpl-{:016x}-", self.config.node_id)
    }

    /// Read the log until it ends or something fatal happens. Entries up to
    /// `position` only rebuild the certifier; later ones are acted on.
    pub async fn run(
        self: Arc<Self>,
        mut log: mpsc::Receiver<Committed>,
        position: u64,
    ) -> Result<(), Fatal> {
        let mut certifier = Certifier::new(self.config.window);
        let mut seen = Seen::new(self.config.window);
        while let Some(item) = log.recv().await {
            let (seqno, data) = match item {
                Committed::Entry { seqno, data } => (seqno, data),
                Committed::Marker { seqno } => {
                    self.processed.send_replace(seqno);
                    continue;
                }
                Committed::SnapshotInstalled { seqno } => {
                    return Err(Fatal(format!(
                        "the log was purged past this node's position (state transfer needed \
                         up to seqno {seqno}); state transfer is not implemented in this version"
                    )));
                }
            };
            let entry = LogEntry::decode(&data).map_err(|e| {
                Fatal(format!(
                    "log entry {seqno} cannot be read ({e}); stopping rather than diverge"
                ))
            })?;
            let act = seqno > position;
            match entry {
                LogEntry::WriteSet(ws) => {
                    let first = seen.record(ws.origin_node, &ws.xid, seqno, false);
                    let verdict = if first == FirstSeen::WriteSet(seqno) {
                        let keys = certification_keys(&ws.keys);
                        let mode = if ws.is_toi() {
                            Mode::TotalOrderIsolation
                        } else {
                            Mode::Transaction
                        };
                        let request = crate::certify::CertRequest {
                            seqno,
                            depends_on: ws.depends_on,
                            mode,
                            keys: &keys,
                        };
                        Some(certifier.certify(&request).map_err(|e| {
                            Fatal(format!("certification of seqno {seqno} failed: {e}"))
                        })?)
                    } else {
                        None
                    };
                    if act {
                        self.act_on_write_set(seqno, ws, verdict)?;
                    } else if let Some(verdict) = verdict
                        && ws.origin_node == self.config.node_id
                    {
                        self.replayed_own
                            .lock()
                            .expect("replayed lock")
                            .insert(ws.xid, (seqno, verdict));
                    }
                }
                LogEntry::Abandon { origin_node, xid } => {
                    let first = seen.record(origin_node, &xid, seqno, true);
                    if act {
                        self.deliver(seqno)?;
                        self.finish(seqno);
                        if origin_node == self.config.node_id {
                            match first {
                                FirstSeen::Abandoned(s) if s == seqno => self.abandoned(&xid),
                                FirstSeen::WriteSet(earlier) => {
                                    self.notify(&xid, Delivered::OrderedEarlier(earlier));
                                }
                                // Abandoned by an earlier marker (already
                                // rolled back if nobody waited): only a
                                // waiter for this marker needs the answer.
                                FirstSeen::Abandoned(_) => {
                                    self.notify(&xid, Delivered::Abandoned);
                                }
                            }
                        }
                    }
                }
            }
            self.processed.send_replace(seqno);
        }
        Err(Fatal("the ordered log stopped".into()))
    }

    /// Stop the node: continuing could make it diverge.
    fn stop(&self, why: String) {
        tracing::error!(reason = %why, "stopping the node");
        self.stopped.send_replace(Some(why));
    }

    /// Resolves when something asked the node to stop; the reason.
    pub async fn stopped(&self) -> Fatal {
        let mut rx = self.stopped.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => Fatal(reason.clone().unwrap_or_default()),
            Err(_) => Fatal("the pipeline was dropped".into()),
        }
    }

    fn deliver(&self, seqno: u64) -> Result<(), Fatal> {
        self.order
            .lock()
            .expect("order lock")
            .delivered(seqno)
            .map_err(|e| Fatal(e.to_string()))
    }

    fn act_on_write_set(
        self: &Arc<Self>,
        seqno: u64,
        ws: WriteSet,
        verdict: Option<Verdict>,
    ) -> Result<(), Fatal> {
        self.deliver(seqno)?;
        let Some(verdict) = verdict else {
            // A later copy of a decided transaction: nothing to do.
            self.finish(seqno);
            return Ok(());
        };
        if ws.origin_node != self.config.node_id {
            match verdict {
                Verdict::Fail(_) => self.finish(seqno),
                Verdict::Pass { apply_after } => {
                    self.received.fetch_add(1, Ordering::Relaxed);
                    self.enqueue_apply(seqno, apply_after, ws);
                }
            }
            return Ok(());
        }
        self.replicated.fetch_add(1, Ordering::Relaxed);
        if matches!(verdict, Verdict::Fail(_)) {
            // Nothing of it commits: it does not hold up later commits.
            self.cert_failures.fetch_add(1, Ordering::Relaxed);
            self.finish(seqno);
        }
        if self.notify(&ws.xid, Delivered::Certified { seqno, verdict }) {
            return Ok(());
        }
        if let (Verdict::Pass { apply_after }, true) = (verdict, ws.is_toi()) {
            // Its session is gone before running it; the other nodes run
            // it, so this node must too.
            self.enqueue_apply(seqno, apply_after, ws);
            return Ok(());
        }
        // Nobody waits (the session is gone, or this node restarted): the
        // pipeline resolves the prepared transaction itself, in turn.
        let xid = String::from_utf8_lossy(&ws.xid).into_owned();
        let pipeline = self.clone();
        tokio::spawn(async move { pipeline.resolve_orphan(seqno, xid, verdict, ws.body).await });
        Ok(())
    }

    fn enqueue_apply(&self, seqno: u64, apply_after: u64, write_set: WriteSet) {
        if seqno <= self.applied_at_start {
            // The database already holds it (applied before a restart).
            if write_set.is_toi() {
                self.capture.schema_changed();
            }
            self.finish(seqno);
            return;
        }
        self.recv_queue.fetch_add(1, Ordering::Relaxed);
        if self
            .apply_queue
            .send(ApplyWork {
                seqno,
                apply_after,
                write_set,
            })
            .is_err()
        {
            self.stop(format!(
                "seqno {seqno} cannot be applied: the appliers stopped"
            ));
        }
    }

    /// Start write-sets on the appliers in seqno order, at most
    /// `apply_threads` at once. Slots are taken in order, so the lowest
    /// write-set not yet committed always has one (no slot is held by a
    /// later write-set waiting for it).
    pub async fn run_appliers(self: Arc<Self>) {
        let Some(mut queue) = self.apply_queue_rx.lock().expect("queue lock").take() else {
            return;
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(
            self.config.apply_threads.max(1),
        ));
        while let Some(work) = queue.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let pipeline = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                pipeline.apply(work).await;
            });
        }
    }

    async fn apply(self: &Arc<Self>, work: ApplyWork) {
        let ApplyWork {
            seqno,
            apply_after,
            write_set,
        } = work;
        self.wait_committed(apply_after).await;
        let result = match &write_set.body {
            Body::Rows { .. } => {
                crate::failpoint::hit("before-remote-apply").await;
                self.applier
                    .apply_rows(seqno, &write_set.body, None, || self.wait_turn(seqno))
                    .await
            }
            Body::Toi(toi) => {
                self.wait_turn(seqno).await;
                let result = self.applier.apply_toi(seqno, toi).await;
                self.capture.schema_changed();
                result.map(|outcome| self.toi_outcome(seqno, toi, outcome))
            }
        };
        self.recv_queue.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                tracing::debug!(seqno, origin = write_set.origin_node, "applied");
                self.finish(seqno);
            }
            Err(e) => self.stop(format!(
                "{e}; stopping rather than diverge (a restart applies it again from the log)"
            )),
        }
    }

    fn toi_outcome(&self, seqno: u64, toi: &TOIStatement, outcome: ToiOutcome) {
        if let ToiOutcome::Failed(code, message) = outcome {
            self.toi_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                seqno,
                code,
                %message,
                database = %toi.database,
                statement = %String::from_utf8_lossy(&toi.statement),
                "a replicated schema or account statement failed on this node"
            );
        }
    }

    /// Wait until every delivered seqno up to `seqno` has finished.
    async fn wait_committed(&self, seqno: u64) {
        let mut committed = self.committed.subscribe();
        loop {
            if self
                .order
                .lock()
                .expect("order lock")
                .is_done_through(seqno)
            {
                return;
            }
            if committed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Hand `delivered` to the session waiting for `xid`, if any; whether
    /// one took it.
    fn notify(&self, xid: &[u8], delivered: Delivered) -> bool {
        let waiter = self.waiters.lock().expect("waiters lock").remove(xid);
        waiter.is_some_and(|tx| tx.send(delivered).is_ok())
    }

    /// A transaction of this node that the log abandoned.
    fn abandoned(self: &Arc<Self>, xid: &[u8]) {
        if self.notify(xid, Delivered::Abandoned) {
            return;
        }
        let xid = String::from_utf8_lossy(xid).into_owned();
        let pipeline = self.clone();
        tokio::spawn(async move { pipeline.rollback_decided(&xid).await });
    }

    async fn resolve_orphan(
        self: Arc<Self>,
        seqno: u64,
        xid: String,
        verdict: Verdict,
        body: Body,
    ) {
        match verdict {
            Verdict::Pass { .. } => {
                self.wait_turn(seqno).await;
                match crate::apply::replay_pending(&self.admin, &xid).await {
                    Ok(false) => self.commit_decided(seqno, &xid).await,
                    Ok(true) => self.replay_orphan(seqno, &xid, &body).await,
                    Err(e) => self.stop(format!(
                        "cannot tell whether transaction {xid} (seqno {seqno}) was rolled back \
                         for a replay ({e}); stopping rather than guess"
                    )),
                }
            }
            Verdict::Fail(_) => self.rollback_decided(&xid).await,
        }
    }

    /// Finish the replay of `xid` that a crash interrupted: its local
    /// transaction gave way (and is rolled back now if it is still
    /// prepared); its write-set commits from the log.
    async fn replay_orphan(&self, seqno: u64, xid: &str, body: &Body) {
        if let Err(e) = self.resolver.end(xid, "ROLLBACK").await {
            self.stop(format!(
                "transaction {xid} (seqno {seqno}) gave way for a replay and cannot be rolled \
                 back ({e}); stopping so that recovery replays it"
            ));
            return;
        }
        match self
            .applier
            .apply_rows(seqno, body, Some(xid), || std::future::ready(()))
            .await
        {
            Ok(()) => {
                tracing::info!(seqno, %xid, "finished a replay a restart interrupted");
                self.replays_done.fetch_add(1, Ordering::Relaxed);
                self.finish(seqno);
            }
            Err(e) => self.stop(format!(
                "replaying seqno {seqno} ({xid}) failed: {e}; stopping rather than diverge"
            )),
        }
    }

    /// `XA COMMIT` of `seqno` (its turn has come) from the replicator's
    /// connection, then let later commits go; if it cannot be done, stop
    /// the node (later commits must not overtake it; recovery commits it).
    async fn commit_decided(&self, seqno: u64, xid: &str) {
        match self.resolver.end(xid, "COMMIT").await {
            Ok(ended) => {
                tracing::info!(seqno, %xid, ?ended, "committed a prepared transaction its session could not");
                self.finish(seqno);
            }
            Err(e) => self.stop(format!(
                "transaction {xid} (seqno {seqno}) passed certification but cannot be committed \
                 locally ({e}); stopping so that recovery commits it from the log"
            )),
        }
    }

    /// `XA ROLLBACK` of a transaction the log rejected or abandoned (or
    /// that was never ordered); if it cannot be done, stop the node (its
    /// locks would block every later writer; recovery rolls it back).
    async fn rollback_decided(&self, xid: &str) {
        match self.resolver.end(xid, "ROLLBACK").await {
            Ok(ended) => {
                tracing::info!(%xid, ?ended, "rolled back a prepared transaction its session could not")
            }
            Err(e) => self.stop(format!(
                "transaction {xid} must be rolled back and cannot be ({e}); stopping so that \
                 recovery rolls it back"
            )),
        }
    }

    /// Order an abandon marker for `xid`, retrying until one is ordered:
    /// whichever of its write-set and a marker comes first in the log
    /// decides it, and the delivery loop then ends it.
    fn abandon_until_ordered(self: &Arc<Self>, xid: &str) {
        let pipeline = self.clone();
        let marker = LogEntry::Abandon {
            origin_node: self.config.node_id,
            xid: xid.as_bytes().to_vec(),
        }
        .encode();
        let xid = xid.to_string();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            while pipeline.stopped.borrow().is_none() {
                match pipeline
                    .member
                    .propose(marker.clone(), pipeline.config.commit_timeout)
                    .await
                {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(%xid, error = %e, "abandon marker not ordered yet; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    /// A session stops waiting for `xid`'s delivery. If the delivery loop
    /// already took its waiter, the answer is (about to be) in `rx` and is
    /// returned; otherwise nothing will answer it any more, the log is
    /// asked to abandon it, and the outcome is unknown to the client.
    async fn stop_waiting(
        self: &Arc<Self>,
        xid: &str,
        rx: oneshot::Receiver<Delivered>,
        why: String,
    ) -> Result<Delivered, CommitError> {
        let ours = self
            .waiters
            .lock()
            .expect("waiters lock")
            .remove(xid.as_bytes())
            .is_some();
        if !ours && let Ok(delivered) = rx.await {
            return Ok(delivered);
        }
        self.abandon_until_ordered(xid);
        Err(CommitError::Indeterminate(why))
    }

    /// Wait until every seqno before `seqno` has finished.
    async fn wait_turn(&self, seqno: u64) {
        let mut committed = self.committed.subscribe();
        loop {
            if self.order.lock().expect("order lock").is_turn(seqno) {
                return;
            }
            if committed.changed().await.is_err() {
                return;
            }
        }
    }

    fn finish(&self, seqno: u64) {
        let moved = self.order.lock().expect("order lock").finish(seqno);
        match moved {
            Ok(Some(last)) => {
                self.committed.send_replace(last);
            }
            Ok(None) => {
                // Wake turn-waiters anyway: the head may have changed.
                self.committed.send_modify(|_| {});
            }
            Err(e) => tracing::error!(seqno, error = %e, "commit order"),
        }
    }

    /// Keep the durable position (last committed) in its file, at most
    /// every `every`. It may lag: entries after it are acted on again
    /// after a restart, which is harmless (resolving an already resolved
    /// transaction is a no-op).
    pub async fn keep_position(self: Arc<Self>, every: Duration) {
        let mut committed = self.committed.subscribe();
        let mut written = *committed.borrow();
        loop {
            if committed.changed().await.is_err() {
                return;
            }
            let last = *committed.borrow_and_update();
            if last != written {
                let path = self.config.position_file.clone();
                let bytes = last.to_string().into_bytes();
                let result = tokio::task::spawn_blocking(move || {
                    group::log_store::write_file_atomically(&path, &bytes)
                })
                .await;
                match result {
                    Ok(Ok(())) => written = last,
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not save the position"),
                    Err(e) => tracing::warn!(error = %e, "could not save the position"),
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Ping the local MariaDB every `every`; when it has not answered
    /// `MISSES` times in a row (each bounded by `every`), stop the node: it
    /// can neither commit nor apply, and must not look Synced to clients
    /// and load balancers meanwhile. A restart (after MariaDB's) recovers.
    pub async fn watch_local_server(self: Arc<Self>, every: Duration) {
        const MISSES: u32 = 3;
        let mut missed = 0;
        loop {
            tokio::time::sleep(every).await;
            let ping = async {
                let mut conn = self.admin.get_conn().await?;
                conn.ping().await
            };
            let error = match tokio::time::timeout(every, ping).await {
                Ok(Ok(())) => {
                    missed = 0;
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {every:?}"),
            };
            missed += 1;
            tracing::warn!(node = self.config.node_id, missed, error = %error, "the local MariaDB did not answer a ping");
            if missed >= MISSES {
                self.stop(format!(
                    "the local MariaDB does not answer ({error}); restart it, then this replicator"
                ));
                return;
            }
        }
    }

    /// Sample the group and the pipeline every `every` for the node's
    /// Joined/Synced state and flow-control time (status, `/health`).
    pub async fn track_sync(self: Arc<Self>, every: Duration) {
        loop {
            let s = self.member.status();
            let sample = Sample {
                primary: s.primary.is_primary(),
                processed: *self.processed.borrow(),
                recv_queue: self.recv_queue.load(Ordering::Relaxed),
                flow_paused: !s.flow_control_paused_by.is_empty(),
            };
            let needs_target = {
                let mut sync = self.sync.lock().expect("sync lock");
                sync.observe(std::time::Instant::now(), sample);
                sync.needs_target()
            };
            if needs_target
                && let Ok(Ok(index)) =
                    tokio::time::timeout(every * 10, self.member.read_index()).await
            {
                self.sync.lock().expect("sync lock").set_target(index);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Wait until the delivery loop has processed `seqno`.
    pub async fn wait_processed(&self, seqno: u64, timeout: Duration) -> bool {
        let mut processed = self.processed.subscribe();
        tokio::time::timeout(timeout, processed.wait_for(|p| *p >= seqno))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Wait until every delivered seqno has finished (no commit pending).
    async fn wait_all_finished(&self) {
        let mut committed = self.committed.subscribe();
        loop {
            {
                let order = self.order.lock().expect("order lock");
                if order.last_committed() == order.last_delivered() {
                    return;
                }
            }
            if committed.changed().await.is_err() {
                return;
            }
        }
    }

    /// After catching up with the log: every transaction this node left
    /// prepared that the log never decided is abandoned through the log
    /// (so no copy of its write-set can commit later), then rolled back.
    pub async fn abandon_undecided(self: &Arc<Self>) -> Result<usize, Fatal> {
        // Transactions the log did decide are being resolved in turn;
        // let that finish so that XA RECOVER shows only undecided ones.
        self.wait_all_finished().await;
        let mut conn = self
            .admin
            .get_conn()
            .await
            .map_err(|e| Fatal(format!("XA RECOVER: {e}")))?;
        let rows: Vec<(i64, i64, i64, Vec<u8>)> = conn
            .query("XA RECOVER")
            .await
            .map_err(|e| Fatal(format!("XA RECOVER: {e}")))?;
        drop(conn);
        let prefix = self.xid_prefix();
        let _release = ReleaseOnDrop(&self.replayed_own);
        let mut abandoned = 0;
        for (_format, gtrid_len, _bqual_len, data) in rows {
            let gtrid = super::prepared::gtrid(gtrid_len, &data);
            let xid = String::from_utf8_lossy(gtrid).into_owned();
            if !xid.starts_with(&prefix) {
                continue;
            }
            // Decided at or below the recorded position (its XA COMMIT or
            // ROLLBACK did not survive): resolve it by its verdict.
            let replayed = self
                .replayed_own
                .lock()
                .expect("replayed lock")
                .get(gtrid)
                .copied();
            if let Some((seqno, verdict)) = replayed {
                let verb = match verdict {
                    Verdict::Pass { .. } => "COMMIT",
                    Verdict::Fail(_) => "ROLLBACK",
                };
                self.end_in_recovery(&xid, verb).await?;
                tracing::info!(seqno, %xid, verb, "resolved a prepared transaction from the replayed log");
                continue;
            }
            let (tx, rx) = oneshot::channel();
            self.waiters
                .lock()
                .expect("waiters lock")
                .insert(gtrid.to_vec(), tx);
            let marker = LogEntry::Abandon {
                origin_node: self.config.node_id,
                xid: gtrid.to_vec(),
            };
            self.member
                .propose(marker.encode(), self.config.commit_timeout)
                .await
                .map_err(|e| Fatal(format!("abandoning {xid}: {e}")))?;
            let verb = match tokio::time::timeout(self.config.commit_timeout, rx).await {
                Ok(Ok(Delivered::Abandoned)) => "ROLLBACK",
                Ok(Ok(Delivered::Certified {
                    seqno,
                    verdict: Verdict::Pass { .. },
                })) => {
                    self.wait_turn(seqno).await;
                    self.end_in_recovery(&xid, "COMMIT").await?;
                    self.finish(seqno);
                    continue;
                }
                Ok(Ok(Delivered::Certified { .. })) => "ROLLBACK",
                Ok(Ok(Delivered::OrderedEarlier(seqno))) => {
                    // Decided by its write-set; the pipeline resolves it.
                    self.wait_committed(seqno).await;
                    continue;
                }
                _ => return Err(Fatal(format!("abandoning {xid}: no decision in time"))),
            };
            self.end_in_recovery(&xid, verb).await?;
            tracing::info!(%xid, "rolled back a transaction prepared before a crash and never ordered");
            abandoned += 1;
        }
        Ok(abandoned)
    }

    async fn end_in_recovery(&self, xid: &str, verb: &'static str) -> Result<Ended, Fatal> {
        self.resolver
            .end(xid, verb)
            .await
            .map_err(|e| Fatal(e.to_string()))
    }

    async fn decide_inner(
        self: &Arc<Self>,
        xid: &str,
        depends_on: u64,
        last_gtid: Option<String>,
        claim: &dyn LockClaim,
    ) -> Result<Decision, CommitError> {
        let gtid = match last_gtid.as_deref().map(str::parse::<Gtid>) {
            None => None,
            Some(Ok(g)) => Some(g),
            Some(Err(e)) => {
                return Err(refused(
                    1180,
                    "HY000",
                    format!("unreadable @@last_gtid: {e}"),
                ));
            }
        };
        let started = std::time::Instant::now();
        // Prepared, it holds its locks until it ends: an applier of an
        // earlier write-set blocked by them makes it give way through its
        // claim (it is never killed: that would not release a prepared
        // transaction's locks). Not yet ordered, it just rolls back.
        let captured = tokio::select! {
            captured = self.capture.take(xid.as_bytes(), gtid) => captured,
            _ = claim.asked_to_give_way() => {
                self.applier.count_abort();
                return Err(refused(
                    ER_DEADLOCK,
                    "40001",
                    "Deadlock found when trying to get lock; try restarting transaction \
                     (a conflicting write-set from another node was applied first)"
                        .into(),
                ));
            }
        };
        let captured = match captured {
            Ok(None) => return Ok(Decision::ReadOnly),
            Ok(Some(c)) => c,
            Err(e) => return Err(capture_refusal(e)),
        };
        if captured.bytes > self.config.max_writeset_bytes {
            return Err(refused(
                1180,
                "HY000",
                format!(
                    "transaction too large to replicate: {} bytes of row events, limit {} \
                     (max_writeset_bytes)",
                    captured.bytes, self.config.max_writeset_bytes
                ),
            ));
        }
        let ws = WriteSet {
            origin_node: self.config.node_id,
            xid: xid.as_bytes().to_vec(),
            depends_on,
            keys: captured.keys,
            body: captured.body,
        };
        let captured_at = started.elapsed();
        let body = ws.body.clone();
        // Asked to give way from here on, it is rolled back and its
        // write-set committed from the log in its turn (replay).
        let delivered = self.order(ws).await?;
        if let Delivered::Certified {
            seqno,
            verdict: Verdict::Pass { .. },
        } = delivered
        {
            claim.ordered_as(seqno);
            tokio::select! {
                _ = self.wait_turn(seqno) => {}
                _ = claim.asked_to_give_way() => {
                    // Recorded before the rollback, so that a crash before
                    // the replay commits cannot pass for a commit.
                    match crate::apply::record_replay(&self.admin, xid, seqno).await {
                        Ok(()) => {
                            self.replays
                                .lock()
                                .expect("replays lock")
                                .insert(xid.as_bytes().to_vec(), (seqno, body));
                            return Ok(Decision::Replay { seqno });
                        }
                        Err(e) => {
                            // Keep the locks: the applier waiting for them
                            // times out and retries; the commit goes on. A
                            // record that was written although its answer
                            // was lost must not outlive this commit.
                            tracing::warn!(seqno, %xid, error = %e, "cannot record a replay; not giving way");
                            if let Err(e) = crate::apply::forget_replay(&self.admin, xid).await {
                                // Left prepared: recovery finds the record
                                // (if it exists) and replays consistently.
                                let why = format!(
                                    "a replay record of {xid} (seqno {seqno}) may exist and \
                                     cannot be removed ({e}); stopping so that recovery decides"
                                );
                                self.stop(why.clone());
                                return Err(CommitError::Indeterminate(why));
                            }
                            self.wait_turn(seqno).await;
                        }
                    }
                }
            }
        }
        self.decision(delivered, started, captured_at).await
    }

    /// Commit a local transaction's write-set from the log in its turn,
    /// after its session rolled it back to give way (Galera's replay).
    async fn replay_inner(&self, xid: &str) -> Result<(), CommitError> {
        let Some((seqno, body)) = self
            .replays
            .lock()
            .expect("replays lock")
            .remove(xid.as_bytes())
        else {
            return Err(refused(
                1180,
                "HY000",
                format!("no write-set to replay for {xid}"),
            ));
        };
        crate::failpoint::hit("replay-after-rollback").await;
        let result = self
            .applier
            .apply_rows(seqno, &body, Some(xid), || self.wait_turn(seqno))
            .await;
        match result {
            Ok(()) => {
                self.replays_done.fetch_add(1, Ordering::Relaxed);
                self.finish(seqno);
                Ok(())
            }
            Err(e) => {
                self.stop(format!(
                    "replaying seqno {seqno} ({xid}) failed: {e}; stopping rather than diverge"
                ));
                Err(CommitError::Indeterminate(e.to_string()))
            }
        }
    }

    /// Propose `ws` and wait for what the log decides for it.
    async fn order(self: &Arc<Self>, ws: WriteSet) -> Result<Delivered, CommitError> {
        let xid = String::from_utf8_lossy(&ws.xid).into_owned();
        let xid = xid.as_str();
        let (tx, mut rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .insert(ws.xid.clone(), tx);
        let timeout = self.config.commit_timeout;
        if let Err(e) = self
            .member
            .propose(LogEntry::WriteSet(ws).encode(), timeout)
            .await
        {
            // It may or may not be in the log: abandon it through the log,
            // so whichever comes first decides for every node.
            tracing::warn!(%xid, error = %e, "proposal failed; abandoning the transaction");
            let marker = LogEntry::Abandon {
                origin_node: self.config.node_id,
                xid: xid.as_bytes().to_vec(),
            };
            if let Err(e2) = self.member.propose(marker.encode(), timeout).await {
                let why = format!("{e}; and the abandon marker could not be ordered either: {e2}");
                return self.stop_waiting(xid, rx, why).await;
            }
        }
        match tokio::time::timeout(timeout, &mut rx).await {
            Ok(Ok(d)) => Ok(d),
            _ => {
                let why = format!("the log did not deliver the transaction within {timeout:?}");
                self.stop_waiting(xid, rx, why).await
            }
        }
    }

    /// Order a total-order statement of this node and wait for its turn:
    /// every earlier seqno committed, every later one waits for
    /// [`Self::toi_done`].
    async fn begin_toi_inner(
        self: &Arc<Self>,
        xid: String,
        toi: TOIStatement,
        databases: Vec<String>,
    ) -> Result<u64, CommitError> {
        let keys = databases
            .into_iter()
            .map(|database| crate::writeset::WriteSetKey {
                kind: crate::certify::KeyKind::Exclusive,
                scope: crate::writeset::KeyScope::Database {
                    database: database.into_bytes(),
                },
            })
            .collect();
        let ws = WriteSet {
            origin_node: self.config.node_id,
            xid: xid.into_bytes(),
            depends_on: *self.committed.borrow(),
            keys,
            body: Body::Toi(toi),
        };
        match self.order(ws).await? {
            Delivered::Certified {
                seqno,
                verdict: Verdict::Pass { .. },
            } => {
                self.wait_turn(seqno).await;
                Ok(seqno)
            }
            Delivered::Certified {
                verdict: Verdict::Fail(failure),
                ..
            } => Err(refused(1213, "40001", describe(failure))),
            Delivered::Abandoned | Delivered::OrderedEarlier(_) => Err(refused(
                1047,
                "08S01",
                "the statement could not be ordered by the cluster and was not run".into(),
            )),
        }
    }

    /// Wait until every seqno the cluster had committed at the call (its
    /// read index, confirmed by a quorum) has committed here.
    async fn causal_wait_inner(&self) -> Result<(), CommitError> {
        let timeout = self.config.commit_timeout;
        let timed_out = || {
            refused(
                1205,
                "HY000",
                format!(
                    "wsrep_sync_wait: this node did not catch up with the cluster within {timeout:?}"
                ),
            )
        };
        let index = match tokio::time::timeout(timeout, self.member.read_index()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => {
                return Err(refused(
                    1047,
                    "08S01",
                    format!("wsrep_sync_wait: the cluster's position is unknown here: {e}"),
                ));
            }
            Ok(Ok(index)) => index,
        };
        let caught_up = async {
            let mut processed = self.processed.subscribe();
            let _ = processed.wait_for(|p| *p >= index).await;
            self.wait_committed(index).await;
        };
        tokio::time::timeout(timeout, caught_up)
            .await
            .map_err(|_| timed_out())
    }

    /// This node ran its total-order statement `seqno`: record it and let
    /// later commits go.
    async fn toi_done_inner(&self, seqno: u64) {
        if let Err(e) = self.applier.record_position(seqno).await {
            tracing::warn!(seqno, error = %e, "could not record the applied position after a schema statement");
        }
        self.capture.schema_changed();
        self.finish(seqno);
    }

    /// What the session does with what the log delivered.
    async fn decision(
        &self,
        delivered: Delivered,
        started: std::time::Instant,
        captured_at: Duration,
    ) -> Result<Decision, CommitError> {
        match delivered {
            Delivered::Abandoned | Delivered::OrderedEarlier(_) => Err(refused(
                1047,
                "08S01",
                "the transaction could not be ordered by the cluster and was rolled back".into(),
            )),
            Delivered::Certified {
                seqno,
                verdict: Verdict::Pass { .. },
            } => {
                let certified_at = started.elapsed();
                self.wait_turn(seqno).await;
                tracing::debug!(
                    seqno,
                    capture_us = captured_at.as_micros() as u64,
                    certified_us = certified_at.as_micros() as u64,
                    turn_us = started.elapsed().as_micros() as u64,
                    "commit decided"
                );
                Ok(Decision::Commit { seqno })
            }
            Delivered::Certified {
                seqno,
                verdict: Verdict::Fail(failure),
            } => Ok(Decision::Conflict {
                seqno,
                reason: describe(failure),
            }),
        }
    }
}

/// Empties the replayed verdicts once recovery is over.
struct ReleaseOnDrop<'a>(&'a Mutex<HashMap<Vec<u8>, (u64, Verdict)>>);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.0.lock() {
            *map = HashMap::new();
        }
    }
}

fn describe(failure: Failure) -> String {
    match failure {
        Failure::Conflict { with } => {
            format!("a concurrent transaction committed first as seqno {with}")
        }
        Failure::TooOld {
            depends_on,
            oldest_allowed,
        } => format!(
            "the transaction's snapshot (seqno {depends_on}) is older than the certification \
             window (oldest allowed {oldest_allowed})"
        ),
        Failure::DependsOnFuture { depends_on } => {
            format!("the transaction's snapshot seqno {depends_on} is not in the past")
        }
    }
}

fn refused(code: u16, state: &'static str, message: String) -> CommitError {
    CommitError::Refused {
        code,
        state,
        message,
    }
}

fn capture_refusal(e: CaptureError) -> CommitError {
    let message = e.to_string();
    match e {
        CaptureError::NoPrimaryKey { .. } => refused(1173, "42000", message),
        CaptureError::NotInnodb { .. } => refused(1235, "42000", message),
        CaptureError::TooLarge { .. } => refused(1180, "HY000", message),
        _ => refused(
            1180,
            "HY000",
            format!("could not capture the transaction: {message}"),
        ),
    }
}

/// The proxy's view of the pipeline.
#[derive(Clone)]
pub struct Committer(pub Arc<Pipeline>, AutoIncrement, Shutdown);

impl Committer {
    pub fn new(pipeline: Arc<Pipeline>, auto_increment: AutoIncrement, shutdown: Shutdown) -> Self {
        Self(pipeline, auto_increment, shutdown)
    }
}

impl LockClaim for Holder {
    fn ordered_as(&self, seqno: u64) {
        Holder::ordered_as(self, seqno);
    }

    fn asked_to_give_way(&self) -> BoxFuture<'_, ()> {
        Box::pin(Holder::asked_to_give_way(self))
    }
}

impl CommitService for Committer {
    fn new_xid(&self) -> String {
        let n = self.0.xid_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}{:016x}-{n:x}", self.0.xid_prefix(), self.0.xid_boot)
    }

    fn last_committed(&self) -> u64 {
        *self.0.committed.borrow()
    }

    fn decide<'a>(
        &'a self,
        xid: &'a str,
        depends_on: u64,
        last_gtid: Option<String>,
        claim: &'a dyn LockClaim,
    ) -> BoxFuture<'a, Result<Decision, CommitError>> {
        Box::pin(self.0.decide_inner(xid, depends_on, last_gtid, claim))
    }

    fn claim_locks(&self, connection_id: u32) -> Option<Box<dyn LockClaim>> {
        let holder = self.0.applier.hold(connection_id, u64::MAX)?;
        Some(Box::new(holder))
    }

    fn replay<'a>(&'a self, xid: &'a str) -> BoxFuture<'a, Result<(), CommitError>> {
        Box::pin(self.0.replay_inner(xid))
    }

    fn finished(&self, seqno: u64, xid: &str, committed: bool) {
        if committed {
            self.0.finish(seqno);
            return;
        }
        // The cluster decided to commit it and the session could not: the
        // pipeline commits it from its own connection, or stops the node
        // (a restart resolves it from the log).
        let pipeline = self.0.clone();
        let xid = xid.to_string();
        tokio::spawn(async move { pipeline.commit_decided(seqno, &xid).await });
    }

    fn begin_toi<'a>(
        &'a self,
        toi: TOIStatement,
        databases: Vec<String>,
    ) -> BoxFuture<'a, Result<u64, CommitError>> {
        let xid = self.new_xid();
        Box::pin(self.0.begin_toi_inner(xid, toi, databases))
    }

    fn toi_done<'a>(&'a self, seqno: u64) -> BoxFuture<'a, ()> {
        Box::pin(self.0.toi_done_inner(seqno))
    }

    fn rollback_failed(&self, xid: &str) {
        let pipeline = self.0.clone();
        let xid = xid.to_string();
        tokio::spawn(async move { pipeline.rollback_decided(&xid).await });
    }

    fn schema_changed(&self) {
        self.0.capture.schema_changed();
    }

    fn causal_wait(&self) -> BoxFuture<'_, Result<(), CommitError>> {
        Box::pin(self.0.causal_wait_inner())
    }

    fn bf_aborted(&self, connection_id: u32) -> bool {
        self.0.applier.was_aborted(connection_id)
    }

    fn auto_increment(&self) -> Option<(u16, u16)> {
        self.1.current().map(|s| (s.increment, s.offset))
    }

    fn is_primary(&self) -> bool {
        self.0.member.primary().borrow().is_primary()
    }

    fn status(&self) -> Vec<(String, String)> {
        let p = &self.0;
        let s = p.member.status();
        let primary = s.primary.is_primary();
        let on = |b: bool| if b { "ON" } else { "OFF" }.to_string();
        let voters = s.members.iter().filter(|m| m.voter).count();
        let index = s
            .members
            .iter()
            .position(|m| m.node_id == s.node_id)
            .unwrap_or(0);
        let (state, flow_paused) = {
            let sync = p.sync.lock().expect("sync lock");
            let state = if self.2.phase() == StopPhase::Running {
                sync.local_state(primary)
            } else {
                // Stopping: out of load balancers' rotation (`/health`).
                (0, "Leaving")
            };
            (state, sync.flow_control_paused())
        };
        let uuid = s.cluster_uuid.map_or_else(
            || "00000000-0000-0000-0000-000000000000".to_string(),
            |u| {
                let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            },
        );
        let incoming: Vec<&str> = s
            .members
            .iter()
            .filter(|m| !m.arbitrator && !m.client_address.is_empty())
            .map(|m| m.client_address.as_str())
            .collect();
        [
            (
                "wsrep_cluster_status",
                if primary { "Primary" } else { "non-Primary" }.to_string(),
            ),
            ("wsrep_cluster_size", voters.to_string()),
            ("wsrep_cluster_state_uuid", uuid),
            ("wsrep_cluster_conf_id", s.conf_id.to_string()),
            ("wsrep_incoming_addresses", incoming.join(",")),
            ("wsrep_connected", on(true)),
            ("wsrep_ready", on(primary)),
            ("wsrep_local_state", state.0.to_string()),
            ("wsrep_local_state_comment", state.1.to_string()),
            ("wsrep_flow_control_paused", format!("{flow_paused:.6}")),
            ("wsrep_group_role", s.role.to_string()),
            ("wsrep_group_term", s.term.to_string()),
            (
                "wsrep_group_leader",
                s.leader.map_or_else(String::new, |l| l.to_string()),
            ),
            ("wsrep_group_applied", s.applied.to_string()),
            ("wsrep_group_membership_settled", on(s.membership_settled)),
            ("wsrep_local_index", index.to_string()),
            ("wsrep_last_committed", p.committed.borrow().to_string()),
            (
                "wsrep_replicated",
                p.replicated.load(Ordering::Relaxed).to_string(),
            ),
            (
                "wsrep_local_cert_failures",
                p.cert_failures.load(Ordering::Relaxed).to_string(),
            ),
            (
                "wsrep_received",
                p.received.load(Ordering::Relaxed).to_string(),
            ),
            (
                "wsrep_local_recv_queue",
                p.recv_queue.load(Ordering::Relaxed).to_string(),
            ),
            ("wsrep_local_bf_aborts", p.applier.aborts().to_string()),
            (
                "wsrep_local_replays",
                p.replays_done.load(Ordering::Relaxed).to_string(),
            ),
            (
                "wsrep_toi_failures",
                p.toi_failures.load(Ordering::Relaxed).to_string(),
            ),
            (
                "wsrep_flow_control_paused_by",
                format!("{:?}", s.flow_control_paused_by),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl From<GroupError> for Fatal {
    fn from(e: GroupError) -> Self {
        Fatal(e.to_string())
    }
}
