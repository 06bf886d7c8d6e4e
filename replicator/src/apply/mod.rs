//! Applies other nodes' write-sets to the local MariaDB: row write-sets as
//! `BINLOG '…'` statements in one transaction, total-order (DDL, account)
//! statements with their database and session context. Each row apply
//! commits together with the node's applied position
//! (`replicator.applied_position`), so after a crash the node knows
//! exactly which write-sets its database already holds.
//!
//! Owns the applier connections (`sql_log_bin=0`: remote changes do not
//! re-enter this node's binlog, so capture never sees them). It does not
//! decide anything: the pipeline says what to apply, when it may start
//! (its dependencies committed) and when it may commit (its turn).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::*;

use crate::capture::replay::binlog_statements;
use crate::writeset::{Body, TOIStatement};

/// Server errors after which applying again can succeed: a deadlock or a
/// lock wait timeout against a local transaction.
const RETRYABLE: [u16; 2] = [1213, 1205];

/// How many times a row write-set is applied again after a retryable
/// error before the node gives up.
const ATTEMPTS: u32 = 5;

/// Why a write-set could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying seqno {seqno}: {source}")]
    Server {
        seqno: u64,
        #[source]
        source: mysql_async::Error,
    },
    #[error("applying seqno {seqno}: the statement is not valid UTF-8")]
    NotText { seqno: u64 },
}

/// A session connection registered as holding a prepared transaction's
/// locks, from before its `XA END` until it ends: the brute-force aborter
/// never kills it (killing a prepared transaction's connection would not
/// release its locks), it asks it to give way instead.
pub struct Holder {
    id: u32,
    give_way: Arc<tokio::sync::Notify>,
    aborter: Arc<BfAborter>,
}

impl Holder {
    /// Its write-set was ordered as `seqno` (until then it counts as later
    /// than every write-set being applied).
    pub fn ordered_as(&self, seqno: u64) {
        if let Ok(mut registry) = self.aborter.registry.lock()
            && let Some(entry) = registry.holding.get_mut(&self.id)
        {
            entry.0 = seqno;
        }
    }

    /// Resolves when an earlier write-set needs this one's locks.
    pub async fn asked_to_give_way(&self) {
        self.give_way.notified().await;
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Ok(mut registry) = self.aborter.registry.lock() {
            registry.holding.remove(&self.id);
        }
    }
}

/// How one attempt to apply a row write-set ended.
enum Applied {
    Committed,
    /// Rolled back so that an earlier write-set waiting for its locks can
    /// go first.
    GaveWay,
}

/// The outcome of a total-order statement on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToiOutcome {
    Ok,
    /// The statement failed here (code, message).
    Failed(u16, String),
}

/// Whether a connection's processlist state says it waits for a metadata
/// lock ("Waiting for table metadata lock", "… schema metadata lock", …).
fn waits_for_metadata_lock(state: &str) -> bool {
    state.starts_with("Waiting for") && state.contains("metadata lock")
}

/// Server errors of a total-order statement that come from this node's
/// own circumstances (a lock it could not get), not from the statement and
/// the schema every node shares: the statement succeeded or will succeed
/// elsewhere, so going on without it would diverge.
fn local_failure(code: u16) -> bool {
    matches!(code, 1205 | 1213)
}

/// How long an applier statement may wait before the local transactions
/// blocking it are aborted.
const BF_ABORT_AFTER: Duration = Duration::from_millis(100);

/// Applies write-sets through a pool of the replicator's own connections.
#[derive(Clone)]
pub struct Applier {
    pool: mysql_async::Pool,
    opts: mysql_async::Opts,
    aborter: Arc<BfAborter>,
}

/// Brute-force abort: a local transaction holding a lock an applier waits
/// for loses — its connection is killed (which rolls it back), and its
/// session answers 1213.
struct BfAborter {
    /// Its own connections, so that finding blockers never waits for a
    /// free applier.
    pool: mysql_async::Pool,
    /// Server connection ids of applier connections (never aborted).
    appliers: Mutex<HashSet<u32>>,
    /// Who holds locks, and who was aborted: under one lock, so that a
    /// connection is either killed or registered as a holder, never both.
    registry: Mutex<Registry>,
    count: AtomicU64,
}

#[derive(Default)]
struct Registry {
    /// Connections holding a write-set's changes (applier connections,
    /// and sessions from `XA END` on), by connection id: its seqno
    /// (`u64::MAX` until ordered), and how to make it give way to an
    /// earlier one.
    holding: HashMap<u32, (u64, Arc<tokio::sync::Notify>)>,
    /// Connections aborted (or being killed), until their session asks.
    aborted: HashSet<u32>,
}

/// What the aborter does about one connection blocking an applier.
enum Blocker {
    /// Nothing: an earlier write-set, an applier, or a prepared
    /// transaction no connection holds (the pipeline resolves it in its
    /// turn).
    Wait,
    /// A later write-set's holder: told to give way.
    GiveWay(u64, Arc<tokio::sync::Notify>),
    /// A local transaction that is not prepared: killed.
    Kill,
}

impl BfAborter {
    /// Kill every local connection whose transaction holds a lock that
    /// applier connection `waiter` (applying `seqno`) waits for; an
    /// applier of a later write-set holding it is told to give way (roll
    /// back, apply again after its turn comes).
    async fn abort_blockers(&self, waiter: u32, seqno: u64) -> Result<(), mysql_async::Error> {
        let mut conn = self.pool.get_conn().await?;
        let mut blockers: Vec<u64> = conn
            .exec(
                "SELECT DISTINCT b.trx_mysql_thread_id \
                 FROM information_schema.INNODB_LOCK_WAITS w \
                 JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id \
                 JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id \
                 WHERE r.trx_mysql_thread_id = ?",
                (waiter,),
            )
            .await?;
        // A schema statement waiting for a metadata lock: the server does
        // not say who holds it, so every open transaction is a suspect
        // (a transaction holds its tables' metadata locks until it ends).
        let state: Option<String> = conn
            .exec_first(
                "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
                (waiter,),
            )
            .await?;
        if state.is_some_and(|s| waits_for_metadata_lock(&s)) {
            let open: Vec<u64> = conn
                .exec(
                    "SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX \
                     WHERE trx_mysql_thread_id <> ?",
                    (waiter,),
                )
                .await?;
            blockers.extend(open);
            blockers.sort_unstable();
            blockers.dedup();
        }
        tracing::debug!(
            applier = waiter,
            seqno,
            ?blockers,
            "an applier waits for a lock"
        );
        for blocker in blockers {
            let Ok(id) = u32::try_from(blocker) else {
                continue;
            };
            match self.classify(id, seqno) {
                Blocker::Wait => continue,
                Blocker::GiveWay(later, give_way) => {
                    tracing::debug!(
                        seqno,
                        later,
                        "a later write-set gives way to an earlier one"
                    );
                    give_way.notify_one();
                    continue;
                }
                Blocker::Kill => {}
            }
            match conn.query_drop(format!("KILL CONNECTION {id}")).await {
                Ok(()) => {
                    self.count.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        connection = id,
                        applier = waiter,
                        "aborted a local transaction blocking an applier"
                    );
                }
                // Already gone.
                Err(mysql_async::Error::Server(e)) if e.code == 1094 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl BfAborter {
    /// Decide about blocker `id` of the applier of `seqno`; a connection
    /// to kill is marked aborted first, under the same lock a session
    /// registers under, so it can no longer become a holder.
    fn classify(&self, id: u32, seqno: u64) -> Blocker {
        let mut registry = self.registry.lock().expect("registry lock");
        match registry.holding.get(&id) {
            // An earlier write-set commits first by itself.
            Some((other, _)) if *other < seqno => Blocker::Wait,
            Some((other, give_way)) => Blocker::GiveWay(*other, give_way.clone()),
            // 0: a prepared transaction no connection holds; an applier
            // between write-sets holds nothing of one.
            None if id == 0 || self.appliers.lock().expect("appliers lock").contains(&id) => {
                Blocker::Wait
            }
            None => {
                registry.aborted.insert(id);
                Blocker::Kill
            }
        }
    }

    /// Register `id` as holding write-set `seqno`'s locks, unless it was
    /// chosen to be killed.
    fn hold(self: &Arc<Self>, id: u32, seqno: u64) -> Option<Holder> {
        let mut registry = self.registry.lock().expect("registry lock");
        if registry.aborted.contains(&id) {
            return None;
        }
        Some(self.register(&mut registry, id, seqno))
    }

    /// Register applier connection `id` (never aborted) as holding
    /// write-set `seqno`'s locks.
    fn hold_as_applier(self: &Arc<Self>, id: u32, seqno: u64) -> Holder {
        self.appliers.lock().expect("appliers lock").insert(id);
        let mut registry = self.registry.lock().expect("registry lock");
        self.register(&mut registry, id, seqno)
    }

    fn register(self: &Arc<Self>, registry: &mut Registry, id: u32, seqno: u64) -> Holder {
        let give_way = Arc::new(tokio::sync::Notify::new());
        registry.holding.insert(id, (seqno, give_way.clone()));
        Holder {
            id,
            give_way,
            aborter: self.clone(),
        }
    }
}

/// Statements every applier connection runs first.
fn session_setup() -> Vec<String> {
    vec![
        "SET SESSION sql_log_bin = 0".into(),
        // A lock held by a local transaction must not stall the order for
        // long: fail fast, retry.
        "SET SESSION innodb_lock_wait_timeout = 2".into(),
        "SET SESSION lock_wait_timeout = 10".into(),
    ]
}

impl Applier {
    /// Appliers connecting with `opts` (the replicator's own account), at
    /// most `threads` at once.
    pub fn new(opts: mysql_async::Opts, threads: usize) -> Self {
        let threads = threads.max(1);
        let constraints = mysql_async::PoolConstraints::new(0, threads).unwrap_or_default();
        let pool_opts = mysql_async::PoolOpts::default().with_constraints(constraints);
        let builder = mysql_async::OptsBuilder::from_opts(opts.clone())
            .init(session_setup())
            .pool_opts(pool_opts);
        let watchdog = mysql_async::OptsBuilder::from_opts(opts.clone()).pool_opts(
            mysql_async::PoolOpts::default()
                .with_constraints(mysql_async::PoolConstraints::new(0, 2).unwrap_or_default()),
        );
        Self {
            pool: mysql_async::Pool::new(builder),
            opts,
            aborter: Arc::new(BfAborter {
                pool: mysql_async::Pool::new(watchdog),
                appliers: Mutex::new(HashSet::new()),
                registry: Mutex::new(Registry::default()),
                count: AtomicU64::new(0),
            }),
        }
    }

    /// Session connection `id` is about to prepare its transaction (or
    /// applier connection `id` holds write-set `seqno`): until the
    /// returned handle is dropped it is never killed, and an applier of an
    /// earlier write-set blocked by it asks it to give way through the
    /// handle. `None` when the connection was already chosen to be
    /// killed: its transaction is lost (1213) and must not prepare.
    pub fn hold(&self, id: u32, seqno: u64) -> Option<Holder> {
        self.aborter.hold(id, seqno)
    }

    /// Whether this node aborted server connection `id` for an applier
    /// (asked once, by its session).
    pub fn was_aborted(&self, id: u32) -> bool {
        self.aborter
            .registry
            .lock()
            .expect("registry lock")
            .aborted
            .remove(&id)
    }

    /// Count a local transaction that gave way before it was ordered
    /// (rolled back by its own session).
    pub fn count_abort(&self) {
        self.aborter.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Local transactions aborted for appliers so far.
    pub fn aborts(&self) -> u64 {
        self.aborter.count.load(Ordering::Relaxed)
    }

    /// Run `statement` (part of write-set `seqno`) on applier connection
    /// `conn`; while it waits, what blocks it is aborted or gives way.
    async fn run(
        &self,
        conn: &mut mysql_async::Conn,
        seqno: u64,
        statement: &str,
    ) -> Result<(), mysql_async::Error> {
        let id = conn.id();
        self.aborter
            .appliers
            .lock()
            .expect("appliers lock")
            .insert(id);
        let aborter = self.aborter.clone();
        let run = conn.query_drop(statement);
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => return result,
                _ = tokio::time::sleep(BF_ABORT_AFTER) => {
                    if let Err(e) = aborter.abort_blockers(id, seqno).await {
                        tracing::warn!(applier = id, error = %e, "could not look for transactions blocking an applier");
                    }
                }
            }
        }
    }

    /// Highest seqno whose write-set this database holds by the applied
    /// position (0 for a new node).
    pub async fn applied_position(&self) -> Result<u64, mysql_async::Error> {
        let mut conn = self.pool.get_conn().await?;
        let seqno: Option<u64> = conn
            .query_first("SELECT seqno FROM replicator.applied_position WHERE id = 1")
            .await?;
        Ok(seqno.unwrap_or(0))
    }

    /// Apply a row write-set as seqno `seqno`: run its row events, wait for
    /// `turn` (every earlier seqno committed), then commit it together
    /// with the applied position — and, for a replay of this node's own
    /// transaction `replayed`, with the removal of its replay record.
    /// Retries a deadlock or lock wait timeout against a local transaction.
    pub async fn apply_rows<F, T>(
        &self,
        seqno: u64,
        body: &Body,
        replayed: Option<&str>,
        mut turn: T,
    ) -> Result<(), ApplyError>
    where
        T: FnMut() -> F,
        F: Future<Output = ()>,
    {
        let Some(statements) = binlog_statements(body) else {
            return Ok(());
        };
        let mut attempt = 0;
        let mut after_turn = false;
        loop {
            attempt += 1;
            if after_turn {
                // Gave way to an earlier write-set: apply once it is done.
                turn().await;
            }
            match self
                .apply_rows_once(seqno, &statements, replayed, &mut turn)
                .await
            {
                Ok(Applied::Committed) => return Ok(()),
                Ok(Applied::GaveWay) => {
                    after_turn = true;
                    attempt -= 1;
                }
                Err(mysql_async::Error::Server(e))
                    if RETRYABLE.contains(&e.code) && attempt < ATTEMPTS =>
                {
                    tracing::warn!(seqno, attempt, code = e.code, error = %e.message, "applier lost a lock conflict; applying again");
                    tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                }
                Err(source) => return Err(ApplyError::Server { seqno, source }),
            }
        }
    }

    async fn apply_rows_once<F, T>(
        &self,
        seqno: u64,
        statements: &[String; 2],
        replayed: Option<&str>,
        turn: &mut T,
    ) -> Result<Applied, mysql_async::Error>
    where
        T: FnMut() -> F,
        F: Future<Output = ()>,
    {
        let mut conn = self.pool.get_conn().await?;
        let holder = self.aborter.hold_as_applier(conn.id(), seqno);
        let result = async {
            conn.query_drop("START TRANSACTION").await?;
            for statement in statements {
                self.run(&mut conn, seqno, statement).await?;
            }
            // Holding its locks until its turn: an earlier write-set that
            // needs one of them makes it give way.
            tokio::select! {
                _ = turn() => {}
                _ = holder.asked_to_give_way() => return Ok(Applied::GaveWay),
            }
            conn.query_drop(position_update(seqno)).await?;
            if let Some(xid) = replayed {
                conn.exec_drop(REPLAY_DONE, (xid,)).await?;
            }
            conn.query_drop("COMMIT").await?;
            Ok(Applied::Committed)
        }
        .await;
        drop(holder);
        if !matches!(result, Ok(Applied::Committed)) {
            // The connection may be unusable; dropping it rolls back.
            let _ = conn.query_drop("ROLLBACK").await;
        }
        result
    }

    /// Run a total-order statement as seqno `seqno` (its turn has come):
    /// on a fresh connection, in its database, with its session variables;
    /// then record the applied position. The statement's own failure is
    /// an outcome, not an error.
    pub async fn apply_toi(
        &self,
        seqno: u64,
        toi: &TOIStatement,
    ) -> Result<ToiOutcome, ApplyError> {
        let server = |source| ApplyError::Server { seqno, source };
        let text =
            std::str::from_utf8(&toi.statement).map_err(|_| ApplyError::NotText { seqno })?;
        let mut conn = mysql_async::Conn::new(self.opts.clone())
            .await
            .map_err(server)?;
        for statement in session_setup() {
            conn.query_drop(statement).await.map_err(server)?;
        }
        if !toi.database.is_empty() {
            conn.query_drop(format!("USE {}", quote_identifier(&toi.database)))
                .await
                .map_err(server)?;
        }
        for (name, value) in &toi.session {
            conn.query_drop(session_assignment(name, value))
                .await
                .map_err(server)?;
        }
        let outcome = match self.run(&mut conn, seqno, text).await {
            Ok(()) => ToiOutcome::Ok,
            Err(mysql_async::Error::Server(e)) if local_failure(e.code) => {
                return Err(server(mysql_async::Error::Server(e)));
            }
            Err(mysql_async::Error::Server(e)) => ToiOutcome::Failed(e.code, e.message),
            Err(e) => return Err(server(e)),
        };
        self.record_position(seqno).await?;
        let _ = conn.disconnect().await;
        Ok(outcome)
    }

    /// Record `seqno` as applied (after a total-order statement, which
    /// commits by itself).
    pub async fn record_position(&self, seqno: u64) -> Result<(), ApplyError> {
        let server = |source| ApplyError::Server { seqno, source };
        let mut conn = self.pool.get_conn().await.map_err(server)?;
        conn.query_drop(position_update(seqno))
            .await
            .map_err(server)
    }

    pub async fn disconnect(self) {
        let _ = self.pool.disconnect().await;
        let _ = self.aborter.pool.clone().disconnect().await;
    }
}

/// A replay's record goes in the replay's own commit: while the record
/// exists, the transaction's data is not in this database.
const REPLAY_DONE: &str = "DELETE FROM replicator.replaying WHERE xid = ?";

/// Record, durably and before the local transaction `xid` (ordered as
/// `seqno`) is rolled back to give way, that its write-set must be
/// committed from the log: after a crash, recovery finds the record and
/// replays it rather than taking the missing transaction for committed.
pub async fn record_replay(
    pool: &mysql_async::Pool,
    xid: &str,
    seqno: u64,
) -> Result<(), mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    conn.exec_drop(
        "INSERT INTO replicator.replaying (xid, seqno) VALUES (?, ?) \
         ON DUPLICATE KEY UPDATE seqno = VALUES(seqno)",
        (xid, seqno),
    )
    .await
}

/// Remove `xid`'s replay record, if any (it commits in place after all).
pub async fn forget_replay(pool: &mysql_async::Pool, xid: &str) -> Result<(), mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    conn.exec_drop(REPLAY_DONE, (xid,)).await
}

/// Whether `xid` has a replay record: its local transaction was (or is
/// about to be) rolled back and its write-set not yet committed here.
pub async fn replay_pending(
    pool: &mysql_async::Pool,
    xid: &str,
) -> Result<bool, mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    let found: Option<u64> = conn
        .exec_first(
            "SELECT seqno FROM replicator.replaying WHERE xid = ?",
            (xid,),
        )
        .await?;
    Ok(found.is_some())
}

fn position_update(seqno: u64) -> String {
    format!("UPDATE replicator.applied_position SET seqno = {seqno} WHERE id = 1")
}

/// `name` as a backquoted identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `SET SESSION name = value`: `value` as captured by the origin (a
/// number stays a number, anything else becomes a string literal).
/// `name` must be a plain variable name; anything else is skipped.
fn session_assignment(name: &str, value: &str) -> String {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return "DO 0".into();
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        format!("SET SESSION {name} = {value}")
    } else {
        let escaped = value.replace('\\', "\\\\").replace('\'', "''");
        format!("SET SESSION {name} = '{escaped}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An applier whose pools never connect (the registry is pure).
    fn applier() -> Applier {
        let opts = mysql_async::OptsBuilder::default().ip_or_hostname("127.0.0.1");
        Applier::new(opts.into(), 2)
    }

    fn is_give_way(b: &Blocker, later: u64) -> bool {
        matches!(b, Blocker::GiveWay(s, _) if *s == later)
    }

    #[test]
    fn metadata_lock_waits_are_recognized() {
        assert!(waits_for_metadata_lock("Waiting for table metadata lock"));
        assert!(waits_for_metadata_lock("Waiting for schema metadata lock"));
        assert!(!waits_for_metadata_lock("Sending data"));
        assert!(!waits_for_metadata_lock("altering table"));
    }

    #[test]
    fn lock_failures_of_a_schema_statement_are_local() {
        assert!(local_failure(1205) && local_failure(1213));
        // Table exists / unknown table: every node fails alike.
        assert!(!local_failure(1050) && !local_failure(1051));
    }

    #[tokio::test]
    async fn a_connection_chosen_to_be_killed_can_no_longer_claim_its_locks() {
        let a = applier();
        assert!(matches!(a.aborter.classify(7, 10), Blocker::Kill));
        assert!(a.hold(7, u64::MAX).is_none(), "it must not prepare");
        assert!(a.was_aborted(7), "its session is told once");
        assert!(!a.was_aborted(7));
    }

    #[tokio::test]
    async fn a_claimed_connection_gives_way_to_earlier_write_sets_only() {
        let a = applier();
        let claim = a.hold(7, u64::MAX).expect("not aborted");
        // Not ordered yet: later than every write-set being applied.
        assert!(is_give_way(&a.aborter.classify(7, 10), u64::MAX));
        claim.ordered_as(12);
        assert!(is_give_way(&a.aborter.classify(7, 10), 12));
        assert!(matches!(a.aborter.classify(7, 15), Blocker::Wait));
        // The ask reaches the claim.
        if let Blocker::GiveWay(_, notify) = a.aborter.classify(7, 10) {
            notify.notify_one();
        }
        tokio::time::timeout(Duration::from_secs(1), claim.asked_to_give_way())
            .await
            .expect("asked to give way");
        // Never killed while claimed; once the claim is dropped it can be.
        assert!(!a.was_aborted(7));
        drop(claim);
        assert!(matches!(a.aborter.classify(7, 10), Blocker::Kill));
    }

    #[tokio::test]
    async fn appliers_and_detached_prepared_transactions_are_never_killed() {
        let a = applier();
        let applying = a.aborter.hold_as_applier(3, 20);
        assert!(matches!(a.aborter.classify(3, 30), Blocker::Wait));
        // An applier of a later write-set gives way to an earlier one.
        assert!(is_give_way(&a.aborter.classify(3, 10), 20));
        drop(applying);
        assert!(matches!(a.aborter.classify(3, 10), Blocker::Wait));
        assert!(matches!(a.aborter.classify(0, 10), Blocker::Wait));
        assert!(!a.was_aborted(3) && !a.was_aborted(0));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("d"), "`d`");
        assert_eq!(quote_identifier("a`b"), "`a``b`");
    }

    #[test]
    fn session_values_keep_their_type_and_are_escaped() {
        assert_eq!(
            session_assignment("foreign_key_checks", "0"),
            "SET SESSION foreign_key_checks = 0"
        );
        assert_eq!(
            session_assignment("sql_mode", "ANSI_QUOTES,O'X\\"),
            "SET SESSION sql_mode = 'ANSI_QUOTES,O''X\\\\'"
        );
        assert_eq!(session_assignment("x; DROP", "1"), "DO 0");
    }
}
