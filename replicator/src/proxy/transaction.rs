//! Transaction handling of one session: every transaction that may write
//! runs inside `XA START '<xid>'` on the client's own backend connection,
//! and ends through the commit service (capture, ordering, certification)
//! with `XA COMMIT` or `XA ROLLBACK` + error 1213. MariaDB's semantics are
//! kept: BEGIN / START TRANSACTION / COMMIT / ROLLBACK [AND CHAIN]
//! [RELEASE], autocommit on and off, savepoints, implicit commits before
//! DDL, LOCK TABLES and `SET autocommit = 1`, multi-statement queries,
//! prepared statements (binary and SQL-level). Client-side XA is refused.
//!
//! LOCK TABLES: MariaDB refuses `XA START` while a session has tables
//! locked, and a write there would commit without the cluster. So while
//! tables are locked, reads run as they are and every statement that may
//! write is refused ([`ER_LOCK_OR_ACTIVE_TRANSACTION`]); UNLOCK TABLES, or
//! BEGIN (which unlocks, as in MariaDB), ends it. UNLOCK TABLES with no
//! tables locked commits nothing, as in MariaDB.
//!
//! Owns the session's transaction state; knows nothing of Raft: it talks
//! to the cluster only through [`CommitService`].

use std::future::Future;
use std::pin::Pin;

use super::classify::{self, BeginOptions, ImplicitCommit, StatementClass};
use super::completion::{self, Completion};
use super::packet::{Packet, ProtocolError};
use super::prepared::Prepared;
use super::response::Expect;
use super::session::{Relay, Wire, expect_for, query_payload};
use super::shutdown::{Shutdown, StopPhase, idle_session_must_end};
use super::wire::{self, com, status};
use crate::writeset::TOIStatement;

/// Session variables a schema or account statement runs with on every
/// node (with the client's current database).
const TOI_SESSION: [&str; 9] = [
    "sql_mode",
    "foreign_key_checks",
    "unique_checks",
    "check_constraint_checks",
    "character_set_client",
    "collation_connection",
    "time_zone",
    "default_storage_engine",
    "explicit_defaults_for_timestamp",
];

/// How the cluster decided a prepared transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It wrote nothing that is replicated: commit locally.
    ReadOnly,
    /// Passed certification as `seqno`, and it is its turn: `XA COMMIT`,
    /// then call [`CommitService::finished`].
    Commit { seqno: u64 },
    /// Failed certification: `XA ROLLBACK`, the client gets 1213 (no
    /// [`CommitService::finished`] call: nothing of it commits).
    Conflict { seqno: u64, reason: String },
    /// Passed certification as `seqno`, but while waiting for its turn it
    /// held a lock an earlier write-set needs: `XA ROLLBACK` it here, then
    /// [`CommitService::replay`] commits its write-set from the log in its
    /// turn (Galera's replay); the client gets OK.
    Replay { seqno: u64 },
}

/// Why a commit could not be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Refused before anything was ordered (e.g. a table without a primary
    /// key, too large, not primary): roll back, the client gets the error.
    #[error("{message}")]
    Refused {
        code: u16,
        state: &'static str,
        message: String,
    },
    /// The outcome is unknown (ordered or not): the transaction must stay
    /// prepared until the log decides it, and the client loses its
    /// connection (the standard signal for "outcome unknown").
    #[error("commit outcome unknown: {0}")]
    Indeterminate(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A session's claim on the locks of the transaction it is about to
/// prepare, from before its `XA END` until it ends. While it lives the
/// session's server connection is never killed for an applier (that would
/// leave a prepared transaction holding its locks with no one to end it);
/// an applier of an earlier write-set that needs its locks asks it to give
/// way instead.
pub trait LockClaim: Send + Sync {
    /// The transaction was ordered as `seqno`.
    fn ordered_as(&self, seqno: u64);
    /// Resolves when an earlier write-set needs this transaction's locks.
    fn asked_to_give_way(&self) -> BoxFuture<'_, ()>;
}

/// What the proxy needs from the cluster.
pub trait CommitService: Send + Sync {
    /// A new transaction id, unique on this node forever.
    fn new_xid(&self) -> String;
    /// Every seqno up to this one is committed here: a transaction that
    /// starts now sees at least that much.
    fn last_committed(&self) -> u64;
    /// Claim the locks of the transaction server connection
    /// `connection_id` is about to prepare; `None` when the connection was
    /// already chosen to be killed for an applier (its transaction is
    /// lost: it must not prepare).
    fn claim_locks(&self, connection_id: u32) -> Option<Box<dyn LockClaim>>;
    /// Decide the transaction `xid`, whose `XA PREPARE` just returned and
    /// after which the session's `@@last_gtid` was `last_gtid`; `claim`
    /// is how an applier blocked by it asks it to give way.
    fn decide<'a>(
        &'a self,
        xid: &'a str,
        depends_on: u64,
        last_gtid: Option<String>,
        claim: &'a dyn LockClaim,
    ) -> BoxFuture<'a, Result<Decision, CommitError>>;
    /// Commit the write-set of `xid` (a [`Decision::Replay`], rolled back
    /// on the session's connection) from the log, in its turn.
    fn replay<'a>(&'a self, xid: &'a str) -> BoxFuture<'a, Result<(), CommitError>>;
    /// The `XA COMMIT` of `seqno` (a [`Decision::Commit`]) is done — or,
    /// when `committed` is false, it could not be done on the session's
    /// connection and the service must see to it (the cluster decided).
    fn finished(&self, seqno: u64, xid: &str, committed: bool);
    /// The session could not `XA ROLLBACK` a prepared transaction that
    /// must not commit (failed certification, or refused before it was
    /// ordered): the service must roll it back.
    fn rollback_failed(&self, xid: &str);
    /// Order a schema or account statement in total order; `Ok(seqno)`
    /// once it is its turn to run (every earlier commit done, every later
    /// one waiting). The session then runs it and calls
    /// [`CommitService::toi_done`], whatever its outcome.
    fn begin_toi<'a>(
        &'a self,
        toi: TOIStatement,
        databases: Vec<String>,
    ) -> BoxFuture<'a, Result<u64, CommitError>>;
    /// The statement ordered as `seqno` by [`CommitService::begin_toi`] ran.
    fn toi_done<'a>(&'a self, seqno: u64) -> BoxFuture<'a, ()>;
    /// DDL ran: table metadata must be reloaded.
    fn schema_changed(&self);
    /// Wait until this node has committed everything the cluster had
    /// committed when the call was made (`wsrep_sync_wait`); an error
    /// when that cannot be known or reached in time.
    fn causal_wait(&self) -> BoxFuture<'_, Result<(), CommitError>>;
    /// Whether the node aborted the server connection `connection_id`
    /// because its transaction blocked a replicated write-set.
    fn bf_aborted(&self, connection_id: u32) -> bool;
    /// The node's auto-increment spacing (increment, offset), if the node
    /// controls it; it changes with the membership.
    fn auto_increment(&self) -> Option<(u16, u16)>;
    /// Whether this node is in the primary component: it may serve
    /// clients. Otherwise every statement but status queries gets 1047.
    fn is_primary(&self) -> bool;
    /// The node's state as Galera status variables (`wsrep_…`).
    fn status(&self) -> Vec<(String, String)>;
}

/// The transaction this session has open on its backend connection.
#[derive(Debug, Clone)]
enum Open {
    /// Inside `XA START`.
    Xa { xid: String, depends_on: u64 },
    /// A plain transaction that can never write (START TRANSACTION READ
    /// ONLY): it runs as the client sent it and is never replicated.
    ReadOnly,
}

/// Errors that end a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    Server(String),
    #[error("commit outcome unknown: {0}")]
    Indeterminate(String),
}

/// What ended a statement, for multi-statement queries.
enum Ended {
    Ok,
    Error,
    /// The client asked to close the connection (RELEASE).
    Release,
}

/// The transaction state of one session.
pub struct Transactions<'s> {
    service: &'s dyn CommitService,
    open: Option<Open>,
    /// The session's autocommit, as the server last reported it.
    autocommit: bool,
    /// Whether the client may send several statements in one COM_QUERY
    /// (asked for at connect, switched by COM_SET_OPTION). The proxy
    /// splits them itself: the server connection never allows it.
    multi_statements: bool,
    /// Statement classes of prepared statements.
    prepared: Prepared,
    /// The auto-increment spacing last given to the server connection.
    auto_increment: Option<(u16, u16)>,
    /// The session holds table locks (LOCK TABLES, FLUSH TABLES t WITH
    /// READ LOCK): no XA transaction can start, writes are refused.
    tables_locked: bool,
    /// `wsrep_sync_wait` as the client set it.
    pub sync_wait: u64,
}

const ER_NOT_SUPPORTED: u16 = 1235;
pub const ER_DEADLOCK: u16 = 1213;
/// MariaDB's "Server shutdown in progress" (SQLSTATE 08S01).
const ER_SERVER_SHUTDOWN: u16 = 1053;
/// What Galera answers on a node outside the primary component.
const ER_UNKNOWN_COM_ERROR: u16 = 1047;
/// What Galera answers when `wsrep_sync_wait` times out.
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// The replicator's own schema: never replicated, never changed by clients.
const OWN_SCHEMA: &str = "replicator";
/// MariaDB's "Can't execute the given command because you have active
/// locked tables or an active transaction".
pub const ER_LOCK_OR_ACTIVE_TRANSACTION: u16 = 1192;

impl<'s> Transactions<'s> {
    pub fn new(service: &'s dyn CommitService) -> Self {
        Self {
            service,
            open: None,
            autocommit: true,
            multi_statements: false,
            prepared: Prepared::default(),
            auto_increment: None,
            tables_locked: false,
            sync_wait: 0,
        }
    }

    /// Serve the session until the client leaves.
    pub async fn serve(
        &mut self,
        wire: &mut Wire,
        shutdown: &Shutdown,
    ) -> Result<(), SessionError> {
        self.multi_statements = wire.handshake.has(wire::cap::CLIENT_MULTI_STATEMENTS);
        let mut phase = shutdown.subscribe();
        loop {
            let in_transaction = self.in_transaction();
            let command = tokio::select! {
                command = wire.next_command() => command?,
                _ = phase.wait_for(|p| idle_session_must_end(*p, in_transaction)) => {
                    tracing::debug!(
                        connection = wire.handshake.connection_id,
                        in_transaction,
                        "closing an idle session: the node is stopping"
                    );
                    return Ok(());
                }
            };
            let Some(command) = command else {
                return Ok(());
            };
            if *phase.borrow() != StopPhase::Running
                && !self.in_transaction()
                && command.payload.first() != Some(&com::QUIT)
            {
                wire.error_to_client(
                    ER_SERVER_SHUTDOWN,
                    "08S01",
                    "Server shutdown in progress: this node is leaving the cluster; the \
                     statement did not run, reconnect to another node",
                )
                .await?;
                return Ok(());
            }
            match self.command(wire, command).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => {
                    if self.service.bf_aborted(wire.handshake.connection_id) {
                        // Its transaction lost to a replicated write-set
                        // and was rolled back with its server connection.
                        let _ = wire
                            .error_to_client(
                                ER_DEADLOCK,
                                "40001",
                                "Deadlock found when trying to get lock; try restarting \
                                 transaction (a conflicting write-set from another node was \
                                 applied first; the connection is closed)",
                            )
                            .await;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Whether the session has a transaction (or table locks) open on its
    /// server connection.
    fn in_transaction(&self) -> bool {
        self.open.is_some() || self.tables_locked
    }

    /// Handle one client command; false when the session is over.
    async fn command(&mut self, wire: &mut Wire, command: Packet) -> Result<bool, SessionError> {
        let Some(&code) = command.payload.first() else {
            wire.error_to_client(1047, "08S01", "empty command packet")
                .await?;
            return Ok(true);
        };
        if !self.service.is_primary() && !allowed_outside_primary(&command.payload) {
            wire.error_to_client(
                ER_UNKNOWN_COM_ERROR,
                "08S01",
                "WSREP has not yet prepared node for application use",
            )
            .await?;
            return Ok(true);
        }
        if code != com::QUIT {
            self.follow_auto_increment(wire).await?;
        }
        match code {
            com::QUIT => {
                wire.send_only(&command.payload).await?;
                return Ok(false);
            }
            com::QUERY => return self.query(wire, &command.payload).await,
            com::STMT_PREPARE => {
                let class = classify::classify(&command.payload[1..]);
                let relayed = wire
                    .run(&command.payload, Expect::Prepare, forward())
                    .await?;
                let id = relayed.outcome.prepared.map(|(id, _, _)| id);
                self.prepared.prepared(id, class);
                self.track(relayed.outcome.status);
            }
            com::STMT_EXECUTE | com::STMT_BULK_EXECUTE => {
                let class = statement_id(&command.payload)
                    .map_or(StatementClass::Write, |id| self.prepared.class_of(id));
                return Ok(!matches!(
                    self.statement(wire, &command.payload, class, false).await?,
                    Ended::Release
                ));
            }
            com::STMT_CLOSE => {
                if let Some(id) = statement_id(&command.payload) {
                    self.prepared.closed(id);
                }
                wire.send_only(&command.payload).await?;
            }
            com::SET_OPTION => self.set_option(wire, &command.payload).await?,
            com::CHANGE_USER | com::RESET_CONNECTION => {
                // Both end any transaction on the server (an active XA
                // branch is rolled back with the session's state).
                let outcome = if code == com::CHANGE_USER {
                    wire.change_user(&command.payload).await?
                } else {
                    wire.run(&command.payload, Expect::Single, forward())
                        .await?
                        .outcome
                };
                if outcome.error.is_none() {
                    self.open = None;
                    self.prepared.clear();
                    self.tables_locked = false;
                    self.sync_wait = 0;
                }
                self.track(outcome.status);
            }
            _ => match expect_for(code) {
                Err(why) => wire.error_to_client(1047, "08S01", why).await?,
                Ok(None) => wire.send_only(&command.payload).await?,
                Ok(Some(expect)) => {
                    let relayed = wire.run(&command.payload, expect, forward()).await?;
                    self.track(relayed.outcome.status);
                }
            },
        }
        Ok(true)
    }

    /// COM_SET_OPTION: multi-statements on or off for this client. The
    /// server is asked to turn them off either way (its answer has the
    /// same shape), so only the proxy ever splits a query.
    async fn set_option(&mut self, wire: &mut Wire, payload: &[u8]) -> Result<(), SessionError> {
        const MULTI_STATEMENTS_ON: [u8; 2] = [0, 0];
        const MULTI_STATEMENTS_OFF: [u8; 2] = [1, 0];
        let on = match payload.get(1..) {
            Some(o) if o == MULTI_STATEMENTS_ON => true,
            Some(o) if o == MULTI_STATEMENTS_OFF => false,
            // Unknown options: the server answers for itself.
            _ => {
                let relayed = wire.run(payload, Expect::Single, forward()).await?;
                self.track(relayed.outcome.status);
                return Ok(());
            }
        };
        let mut sent = vec![com::SET_OPTION];
        sent.extend_from_slice(&MULTI_STATEMENTS_OFF);
        let relayed = wire.run(&sent, Expect::Single, forward()).await?;
        if relayed.outcome.error.is_none() {
            self.multi_statements = on;
        }
        self.track(relayed.outcome.status);
        Ok(())
    }

    /// Follow the server's autocommit flag.
    fn track(&mut self, status: Option<u16>) {
        if let Some(s) = status {
            self.autocommit = s & status::AUTOCOMMIT != 0;
        }
    }

    /// A COM_QUERY: one statement, or several when the client allows
    /// multi-statements; each runs as MariaDB would run it alone, and the
    /// client sees one multi-result response that stops at the first error.
    ///
    /// The text is split and classified as bytes, in whatever character set
    /// the client uses. A query the server would split differently (a
    /// character set whose two-byte characters may end in `\\`) cannot run
    /// a statement the proxy did not see: the server connection has
    /// multi-statements off, so MariaDB refuses it as a syntax error.
    async fn query(&mut self, wire: &mut Wire, payload: &[u8]) -> Result<bool, SessionError> {
        let text = payload.get(1..).unwrap_or_default();
        let parts = if self.multi_statements {
            classify::split_statements(text)
        } else {
            Vec::new()
        };
        if parts.len() <= 1 {
            let status = std::str::from_utf8(text)
                .ok()
                .and_then(super::status::wsrep_status_request);
            if let Some(filter) = status {
                self.status_variables(wire, &filter).await?;
                return Ok(true);
            }
            let class = classify::classify(text);
            return Ok(!matches!(
                self.statement(wire, payload, class, false).await?,
                Ended::Release
            ));
        }
        let last = parts.len() - 1;
        for (i, range) in parts.into_iter().enumerate() {
            let sql = text.get(range).unwrap_or_default();
            let class = classify::classify(sql);
            match self
                .statement(wire, &query_payload(sql), class, i < last)
                .await?
            {
                Ended::Ok => {}
                Ended::Error => break,
                Ended::Release => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Run one statement (`payload` is the command to send: COM_QUERY with
    /// its text, or COM_STMT_EXECUTE) according to its class. `more`: more
    /// statements of the same query follow.
    async fn statement(
        &mut self,
        wire: &mut Wire,
        payload: &[u8],
        class: StatementClass,
        more: bool,
    ) -> Result<Ended, SessionError> {
        let relay = Relay {
            to_client: true,
            set_status: if more { status::MORE_RESULTS_EXISTS } else { 0 },
            ..Relay::default()
        };
        if causal_wait_applies(self.sync_wait, &class)
            && let Err(e) = self.service.causal_wait().await
        {
            let (code, state, message) = match e {
                CommitError::Refused {
                    code,
                    state,
                    message,
                } => (code, state, message),
                CommitError::Indeterminate(why) => (ER_LOCK_WAIT_TIMEOUT, "HY000", why),
            };
            return self.refuse(wire, code, state, &message).await;
        }
        match class {
            StatementClass::Xa => {
                self.refuse(
                    wire,
                    ER_NOT_SUPPORTED,
                    "42000",
                    "XA statements are not supported through the replicator (it runs every \
                     transaction as an XA transaction itself)",
                )
                .await
            }
            StatementClass::Begin(options) => {
                if !self.implicit_commit(wire).await? || !self.unlock_tables(wire).await? {
                    return Ok(Ended::Error);
                }
                self.begin(wire, payload, options, relay).await
            }
            StatementClass::Commit { chain, release } => {
                self.end(wire, payload, true, chain, release, relay).await
            }
            StatementClass::Rollback { chain, release } => {
                self.end(wire, payload, false, chain, release, relay).await
            }
            StatementClass::Set {
                autocommit,
                autocommit_unknown,
                sync_wait,
                ..
            } => {
                if let Some(n) = sync_wait {
                    self.sync_wait = n;
                    return self.synthesized_ok(wire, relay).await;
                }
                // Turning autocommit on commits the open transaction.
                let turning_on = autocommit == Some(true) || autocommit_unknown;
                if turning_on && !self.autocommit && !self.implicit_commit(wire).await? {
                    return Ok(Ended::Error);
                }
                self.pass(wire, payload, relay).await
            }
            StatementClass::ImplicitCommit(kind) => {
                if !self.implicit_commit(wire).await? {
                    return Ok(Ended::Error);
                }
                if matches!(kind, ImplicitCommit::Ddl | ImplicitCommit::Account) {
                    return self.total_order(wire, payload, relay).await;
                }
                let ended = self.pass(wire, payload, relay).await?;
                self.service.schema_changed();
                Ok(ended)
            }
            StatementClass::LockTables { unlock: false } => {
                if !self.implicit_commit(wire).await? {
                    return Ok(Ended::Error);
                }
                // Tables held before are released first, also when the
                // new locks cannot be taken.
                let ended = self.pass(wire, payload, relay).await?;
                self.tables_locked = matches!(ended, Ended::Ok);
                Ok(ended)
            }
            StatementClass::LockTables { unlock: true } => {
                // Commits (on the server) only when tables were locked,
                // and then no XA transaction can be open: never an
                // implicit commit of the proxy's own.
                let ended = self.pass(wire, payload, relay).await?;
                self.tables_locked = false;
                Ok(ended)
            }
            StatementClass::SqlPrepare { name, text } => {
                let class = text.map_or(StatementClass::Write, classify::classify);
                // Whatever the outcome, the server dropped any statement of
                // that name first.
                self.prepared.sql_deallocated(&name);
                let ended = self.pass(wire, payload, relay).await?;
                if matches!(ended, Ended::Ok) {
                    self.prepared.sql_prepared(&name, class);
                }
                Ok(ended)
            }
            StatementClass::SqlDeallocate { name } => {
                self.prepared.sql_deallocated(&name);
                self.pass(wire, payload, relay).await
            }
            StatementClass::SqlExecute { name } => {
                let class = self.prepared.sql_class_of(&name);
                // The prepared text's class decides; it cannot be another
                // EXECUTE (MariaDB refuses that), so this recursion ends.
                let class = match class {
                    StatementClass::SqlExecute { .. } => StatementClass::Write,
                    c => c,
                };
                Box::pin(self.statement(wire, payload, class, more)).await
            }
            StatementClass::Session | StatementClass::TemporaryTable | StatementClass::Empty => {
                self.pass(wire, payload, relay).await
            }
            StatementClass::Read | StatementClass::Savepoint => {
                // With autocommit off, this statement starts a transaction
                // that later statements may write in.
                // (Under LOCK TABLES it cannot be an XA transaction, and
                // writes are refused there.)
                if self.open.is_none()
                    && !self.autocommit
                    && !self.tables_locked
                    && !self.xa_start(wire).await?
                {
                    return Ok(Ended::Error);
                }
                self.pass(wire, payload, relay).await
            }
            StatementClass::RollbackToSavepoint | StatementClass::ReleaseSavepoint => {
                self.pass(wire, payload, relay).await
            }
            StatementClass::Write => self.write(wire, payload, relay).await,
        }
    }

    /// Relay a statement as it is.
    async fn pass(
        &mut self,
        wire: &mut Wire,
        payload: &[u8],
        relay: Relay,
    ) -> Result<Ended, SessionError> {
        let relayed = wire.run(payload, Expect::Results, relay).await?;
        self.track(relayed.outcome.status);
        match relayed.outcome.error {
            None => Ok(Ended::Ok),
            Some(e) => {
                self.after_error(wire, e.code).await?;
                Ok(Ended::Error)
            }
        }
    }

    /// After a statement failed: errors that roll back the whole
    /// transaction in InnoDB (deadlock, snapshot-isolation conflict) leave
    /// an XA branch "rollback only"; finish rolling it back, so the session
    /// is outside any transaction, as it would be without XA.
    async fn after_error(&mut self, wire: &mut Wire, code: u16) -> Result<(), SessionError> {
        const ROLLS_BACK_TRANSACTION: [u16; 4] = [1213, 1020, 1614, 1402];
        if ROLLS_BACK_TRANSACTION.contains(&code) && matches!(self.open, Some(Open::Xa { .. })) {
            self.rollback_open(wire).await?;
        }
        Ok(())
    }

    async fn refuse(
        &mut self,
        wire: &mut Wire,
        code: u16,
        state: &str,
        message: &str,
    ) -> Result<Ended, SessionError> {
        wire.error_to_client(code, state, message).await?;
        Ok(Ended::Error)
    }

    /// A schema or account statement: ordered in total order with its
    /// database and session context, run here in its turn (the client
    /// gets its own result), and run by every other node at the same
    /// place in the order.
    async fn total_order(
        &mut self,
        wire: &mut Wire,
        payload: &[u8],
        relay: Relay,
    ) -> Result<Ended, SessionError> {
        let text = match (payload.first(), payload.get(1..).map(std::str::from_utf8)) {
            (Some(&com::QUERY), Some(Ok(text))) => text,
            _ => {
                return self
                    .refuse(
                        wire,
                        ER_NOT_SUPPORTED,
                        "0A000",
                        "schema and account statements must be sent as plain UTF-8 queries \
                         through the replicator (not prepared), so that every node can run them",
                    )
                    .await;
            }
        };
        if !matches!(
            classify::classify(text),
            StatementClass::ImplicitCommit(ImplicitCommit::Ddl | ImplicitCommit::Account)
        ) {
            return self
                .refuse(
                    wire,
                    ER_NOT_SUPPORTED,
                    "0A000",
                    "a schema or account statement run through EXECUTE cannot be replicated; \
                     send the statement itself",
                )
                .await;
        }
        let context = self.toi_context(wire).await?;
        let Some((database, session)) = context else {
            return self
                .refuse(
                    wire,
                    ER_NOT_SUPPORTED,
                    "HY000",
                    "could not read the session's context for a replicated schema statement",
                )
                .await;
        };
        let databases = classify::ddl_databases(text, &database);
        if databases.iter().any(|d| d == OWN_SCHEMA) {
            return self
                .refuse(
                    wire,
                    ER_NOT_SUPPORTED,
                    "0A000",
                    "the replicator's own schema cannot be changed through the replicator",
                )
                .await;
        }
        let toi = TOIStatement {
            database,
            statement: text.as_bytes().to_vec(),
            session,
        };
        let seqno = match self.service.begin_toi(toi, databases).await {
            Ok(seqno) => seqno,
            Err(CommitError::Refused {
                code,
                state,
                message,
            }) => return self.refuse(wire, code, state, &message).await,
            Err(CommitError::Indeterminate(why)) => return Err(SessionError::Indeterminate(why)),
        };
        let ended = self.pass(wire, payload, relay).await;
        self.service.toi_done(seqno).await;
        ended
    }

    /// The session's current database and the [`TOI_SESSION`] variables.
    async fn toi_context(
        &mut self,
        wire: &mut Wire,
    ) -> Result<Option<(String, Vec<(String, String)>)>, SessionError> {
        let fields: Vec<String> = TOI_SESSION
            .iter()
            // CONCAT: MariaDB's JSON_OBJECT writes booleans as a bare ON.
            .map(|name| format!("'{name}', CONCAT(@@session.{name})"))
            .collect();
        let sql = format!(
            "SELECT JSON_OBJECT('database', DATABASE(), {})",
            fields.join(", ")
        );
        let Some(json) = wire.query_value(&sql).await? else {
            return Ok(None);
        };
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&json) else {
            return Ok(None);
        };
        let text = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let database = text(map.get("database")).unwrap_or_default();
        let session = TOI_SESSION
            .iter()
            .filter_map(|name| text(map.get(*name)).map(|v| (name.to_string(), v)))
            .collect();
        Ok(Some((database, session)))
    }

    /// An OK the proxy answers itself (a setting it handles).
    async fn synthesized_ok(
        &mut self,
        wire: &mut Wire,
        relay: Relay,
    ) -> Result<Ended, SessionError> {
        let mut flags = if self.autocommit {
            status::AUTOCOMMIT
        } else {
            0
        };
        if self.open.is_some() {
            flags |= status::IN_TRANS;
        }
        flags |= relay.set_status;
        wire.to_client(&wire::ok_packet(0, 0, flags, 0)).await?;
        wire.flush_client().await?;
        Ok(Ended::Ok)
    }

    /// Answer a `SHOW STATUS` about wsrep variables from the node's state.
    async fn status_variables(
        &mut self,
        wire: &mut Wire,
        filter: &super::status::Filter,
    ) -> Result<(), SessionError> {
        let rows: Vec<(String, String)> = self
            .service
            .status()
            .into_iter()
            .filter(|(name, _)| filter.matches(name))
            .collect();
        let mut flags = if self.autocommit {
            status::AUTOCOMMIT
        } else {
            0
        };
        if self.open.is_some() {
            flags |= status::IN_TRANS;
        }
        let shape = super::status::Shape {
            deprecate_eof: wire.deprecate_eof(),
            extended_metadata: wire
                .handshake
                .has_extended(wire::cap::MARIADB_CLIENT_EXTENDED_METADATA),
        };
        for packet in super::status::result_set(&rows, shape, flags) {
            wire.to_client(&packet).await?;
        }
        wire.flush_client().await?;
        Ok(())
    }

    /// Open an XA transaction (not visible to the client); false if the
    /// server refused (the client has been told).
    async fn xa_start(&mut self, wire: &mut Wire) -> Result<bool, SessionError> {
        let xid = self.service.new_xid();
        let depends_on = self.service.last_committed();
        let outcome = wire.query(&format!("XA START '{xid}'")).await?;
        if let Some(e) = outcome.error {
            wire.error_to_client(e.code, &e.state, &e.message).await?;
            return Ok(false);
        }
        self.open = Some(Open::Xa { xid, depends_on });
        Ok(true)
    }

    /// BEGIN / START TRANSACTION.
    async fn begin(
        &mut self,
        wire: &mut Wire,
        payload: &[u8],
        options: BeginOptions,
        relay: Relay,
    ) -> Result<Ended, SessionError> {
        if options.read_only {
            let ended = self.pass(wire, payload, relay).await?;
            if matches!(ended, Ended::Ok) {
                self.open = Some(Open::ReadOnly);
            }
            return Ok(ended);
        }
        let xid = self.service.new_xid();
        let depends_on = self.service.last_committed();
        let relayed = wire
            .run(
                &query_payload(format!("XA START '{xid}'")),
                Expect::Results,
                Relay {
                    hold_last: true,
                    ..relay
                },
            )
            .await?;
        let held = relayed.held.unwrap_or_default();
        if relayed.outcome.error.is_some() {
            wire.to_client(&held).await?;
            wire.flush_client().await?;
            return Ok(Ended::Error);
        }
        self.open = Some(Open::Xa { xid, depends_on });
        if options.consistent_snapshot {
            // XA START cannot take WITH CONSISTENT SNAPSHOT; a consistent
            // read of an InnoDB table creates the read view now instead.
            let outcome = wire
                .query("SELECT 1 FROM replicator.snapshot_anchor LIMIT 1")
                .await?;
            if let Some(e) = outcome.error {
                tracing::warn!(error = %e.message, "could not take the consistent snapshot at BEGIN");
            }
        }
        wire.to_client(&held).await?;
        wire.flush_client().await?;
        Ok(Ended::Ok)
    }

    /// COMMIT or ROLLBACK, with CHAIN and RELEASE as the statement says
    /// (`Some`) or else as the session's `completion_type` says. A chained
    /// transaction is tracked like one started by BEGIN.
    async fn end(
        &mut self,
        wire: &mut Wire,
        payload: &[u8],
        commit: bool,
        chain: Option<bool>,
        release: Option<bool>,
        relay: Relay,
    ) -> Result<Ended, SessionError> {
        if chain == Some(true) && release == Some(true) {
            // MariaDB refuses AND CHAIN RELEASE as a syntax error.
            return self.pass(wire, payload, relay).await;
        }
        let Completion { chain, release } = self.completion(wire, chain, release).await?;
        let released = |ended| match ended {
            Ended::Ok if release => Ended::Release,
            e => e,
        };
        match self.open.clone() {
            Some(Open::ReadOnly) => {
                // MariaDB ends it and chains (READ ONLY again) or closes
                // the connection itself.
                let ended = self.pass(wire, payload, relay).await?;
                let chained = chain && !release;
                if matches!(ended, Ended::Ok) && !chained {
                    self.open = None;
                }
                return Ok(released(ended));
            }
            None if self.tables_locked || !chain || release => {
                // Under LOCK TABLES no XA transaction can start (a chained
                // plain one cannot write: writes are refused there); else
                // nothing is chained and nothing of ours is open.
                let ended = self.pass(wire, payload, relay).await?;
                return Ok(released(ended));
            }
            None => {
                // Chained with nothing open: end whatever the server may
                // have, then the new transaction is an XA one.
                let plain = if commit {
                    completion::COMMIT_PLAIN
                } else {
                    completion::ROLLBACK_PLAIN
                };
                let outcome = wire.query(plain).await?;
                self.track(outcome.status);
                if let Some(e) = outcome.error {
                    wire.error_to_client(e.code, &e.state, &e.message).await?;
                    return Ok(Ended::Error);
                }
                if !self.xa_start(wire).await? {
                    return Ok(Ended::Error);
                }
                self.synthesized_ok(wire, relay).await?;
                return Ok(Ended::Ok);
            }
            Some(Open::Xa { .. }) => {}
        }
        let result = if commit {
            self.commit_open(wire).await?
        } else {
            self.rollback_open(wire).await?;
            Ok(())
        };
        if let Err((code, state, message)) = result {
            // The transaction is over either way (MariaDB: a failed COMMIT
            // has rolled back); AND CHAIN does not start a new one.
            wire.error_to_client(code, state, &message).await?;
            return Ok(Ended::Error);
        }
        if chain && !release && !self.xa_start(wire).await? {
            return Ok(Ended::Error);
        }
        self.synthesized_ok(wire, relay).await?;
        Ok(if release { Ended::Release } else { Ended::Ok })
    }

    /// How this COMMIT / ROLLBACK ends; reads `completion_type` from the
    /// server only when the statement leaves something to it.
    async fn completion(
        &mut self,
        wire: &mut Wire,
        chain: Option<bool>,
        release: Option<bool>,
    ) -> Result<Completion, SessionError> {
        let session = if completion::needs_session_value(chain, release) {
            wire.query_value(completion::QUERY).await?
        } else {
            None
        };
        Ok(completion::resolve(chain, release, session.as_deref()))
    }

    /// A statement with an implicit commit: commit what is open first.
    /// False if that commit failed (the client has been told; the
    /// statement does not run).
    async fn implicit_commit(&mut self, wire: &mut Wire) -> Result<bool, SessionError> {
        match self.open {
            None => Ok(true),
            Some(Open::ReadOnly) => {
                let outcome = wire.query(completion::COMMIT_PLAIN).await?;
                self.open = None;
                self.track(outcome.status);
                Ok(true)
            }
            Some(Open::Xa { .. }) => match self.commit_open(wire).await? {
                Ok(()) => Ok(true),
                Err((code, state, message)) => {
                    wire.error_to_client(code, state, &message).await?;
                    Ok(false)
                }
            },
        }
    }

    /// Release the session's table locks, if it holds any (BEGIN does so
    /// in MariaDB); false if the server refused (the client has been told).
    async fn unlock_tables(&mut self, wire: &mut Wire) -> Result<bool, SessionError> {
        if !self.tables_locked {
            return Ok(true);
        }
        let outcome = wire.query("UNLOCK TABLES").await?;
        self.track(outcome.status);
        if let Some(e) = outcome.error {
            wire.error_to_client(e.code, &e.state, &e.message).await?;
            return Ok(false);
        }
        self.tables_locked = false;
        Ok(true)
    }

    /// A statement that may write.
    async fn write(
        &mut self,
        wire: &mut Wire,
        payload: &[u8],
        relay: Relay,
    ) -> Result<Ended, SessionError> {
        if self.tables_locked {
            return self
                .refuse(
                    wire,
                    ER_LOCK_OR_ACTIVE_TRANSACTION,
                    "HY000",
                    "Can't execute the given command because you have active locked tables: \
                     the replicator cannot replicate a write under LOCK TABLES (MariaDB \
                     refuses the XA transaction it would run in); UNLOCK TABLES first \
                     (restore dumps made with mysqldump --skip-add-locks)",
                )
                .await;
        }
        if self.open.is_some() {
            return self.pass(wire, payload, relay).await;
        }
        if !self.xa_start(wire).await? {
            return Ok(Ended::Error);
        }
        if !self.autocommit {
            // The statement starts a transaction the client ends later.
            return self.pass(wire, payload, relay).await;
        }
        // Autocommit: the statement is its own transaction. Its last
        // packet waits until the commit is decided.
        let relayed = wire
            .run(
                payload,
                Expect::Results,
                Relay {
                    hold_last: true,
                    clear_status: status::IN_TRANS,
                    ..relay
                },
            )
            .await?;
        let held = relayed.held.unwrap_or_default();
        if relayed.outcome.error.is_some() {
            self.rollback_open(wire).await?;
            wire.to_client(&held).await?;
            wire.flush_client().await?;
            return Ok(Ended::Error);
        }
        match self.commit_open(wire).await? {
            Ok(()) => {
                wire.to_client(&held).await?;
                wire.flush_client().await?;
                Ok(Ended::Ok)
            }
            Err((code, state, message)) => {
                // The client gets the error in place of the statement's end.
                wire.error_to_client(code, state, &message).await?;
                Ok(Ended::Error)
            }
        }
    }

    /// Give the server connection the node's auto-increment spacing if it
    /// changed since the session last got it (once per session, and after
    /// a membership change).
    async fn follow_auto_increment(&mut self, wire: &mut Wire) -> Result<(), SessionError> {
        let Some((increment, offset)) = self.service.auto_increment() else {
            return Ok(());
        };
        if self.auto_increment == Some((increment, offset)) {
            return Ok(());
        }
        let outcome = wire
            .query(&format!(
                "SET SESSION auto_increment_increment = {increment}, \
                 SESSION auto_increment_offset = {offset}"
            ))
            .await?;
        if let Some(e) = outcome.error {
            return Err(SessionError::Server(format!(
                "setting the session's auto-increment spacing: {}",
                e.message
            )));
        }
        self.track(outcome.status);
        self.auto_increment = Some((increment, offset));
        Ok(())
    }

    /// Roll back the open XA transaction.
    async fn rollback_open(&mut self, wire: &mut Wire) -> Result<(), SessionError> {
        let Some(Open::Xa { xid, .. }) = self.open.take() else {
            return Ok(());
        };
        // XA END fails if the server already rolled the branch back (e.g.
        // after a deadlock); XA ROLLBACK then reports it unknown: both fine.
        let _ = wire.query(&format!("XA END '{xid}'")).await?;
        let outcome = wire.query(&format!("XA ROLLBACK '{xid}'")).await?;
        self.track(outcome.status);
        Ok(())
    }

    /// Commit the open XA transaction through the cluster. `Err` carries
    /// the error the client gets (the transaction is then rolled back).
    async fn commit_open(
        &mut self,
        wire: &mut Wire,
    ) -> Result<Result<(), (u16, &'static str, String)>, SessionError> {
        let Some(Open::Xa { xid, depends_on }) = self.open.take() else {
            return Ok(Ok(()));
        };
        // Held until the transaction has ended, whichever way.
        let Some(claim) = self.service.claim_locks(wire.handshake.connection_id) else {
            // Its server connection is being killed for an applier (which
            // rolls the transaction back); the session answers 1213.
            return Err(SessionError::Server(
                "rolled back for a replicated write-set".into(),
            ));
        };
        let end = wire.query(&format!("XA END '{xid}'")).await?;
        if let Some(e) = end.error {
            let _ = wire.query(&format!("XA ROLLBACK '{xid}'")).await?;
            return Ok(Err((e.code, "HY000", e.message)));
        }
        let prepare = wire.query(&format!("XA PREPARE '{xid}'")).await?;
        if let Some(e) = prepare.error {
            // A failed prepare has rolled the branch back.
            let _ = wire.query(&format!("XA ROLLBACK '{xid}'")).await?;
            return Ok(Err((e.code, "HY000", e.message)));
        }
        let last_gtid = self.last_gtid(wire).await?;
        match self
            .service
            .decide(&xid, depends_on, last_gtid, claim.as_ref())
            .await
        {
            Ok(Decision::Replay { seqno }) => {
                // Give its locks away at once; the cluster decided it
                // commits, so the replayed write-set is its commit.
                if self.xa_finish(wire, &xid, "ROLLBACK").await.is_err() {
                    self.service.rollback_failed(&xid);
                }
                match self.service.replay(&xid).await {
                    Ok(()) => {
                        tracing::debug!(seqno, %xid, "committed by replay");
                        Ok(Ok(()))
                    }
                    Err(CommitError::Refused {
                        code,
                        state,
                        message,
                    }) => Ok(Err((code, state, message))),
                    Err(CommitError::Indeterminate(why)) => Err(SessionError::Indeterminate(why)),
                }
            }
            Ok(Decision::ReadOnly) => {
                self.xa_finish(wire, &xid, "COMMIT").await?;
                Ok(Ok(()))
            }
            Ok(Decision::Commit { seqno }) => {
                let result = self.xa_finish(wire, &xid, "COMMIT").await;
                self.service.finished(seqno, &xid, result.is_ok());
                result?;
                Ok(Ok(()))
            }
            Ok(Decision::Conflict { seqno: _, reason }) => {
                self.rollback_prepared(wire, &xid).await?;
                Ok(Err((
                    ER_DEADLOCK,
                    "40001",
                    format!(
                        "Deadlock found when trying to get lock; try restarting transaction \
                         (certification failed: {reason})"
                    ),
                )))
            }
            Err(CommitError::Refused {
                code,
                state,
                message,
            }) => {
                self.rollback_prepared(wire, &xid).await?;
                Ok(Err((code, state, message)))
            }
            Err(CommitError::Indeterminate(why)) => Err(SessionError::Indeterminate(why)),
        }
    }

    /// `XA COMMIT` / `XA ROLLBACK` of a prepared transaction; the server
    /// refusing it is fatal for the session (the cluster decided).
    async fn xa_finish(
        &mut self,
        wire: &mut Wire,
        xid: &str,
        verb: &str,
    ) -> Result<(), SessionError> {
        let outcome = wire.query(&format!("XA {verb} '{xid}'")).await?;
        self.track(outcome.status);
        match outcome.error {
            None => Ok(()),
            Some(e) => Err(SessionError::Server(format!(
                "XA {verb} '{xid}' failed after the cluster decided: {} ({})",
                e.message, e.code
            ))),
        }
    }

    /// `XA ROLLBACK` of a prepared transaction that must not commit; if
    /// the session cannot, the service does (it must not stay prepared).
    async fn rollback_prepared(&mut self, wire: &mut Wire, xid: &str) -> Result<(), SessionError> {
        let result = self.xa_finish(wire, xid, "ROLLBACK").await;
        if result.is_err() {
            self.service.rollback_failed(xid);
        }
        result
    }

    /// The session's `@@last_gtid` (None if it never wrote the binlog).
    async fn last_gtid(&mut self, wire: &mut Wire) -> Result<Option<String>, SessionError> {
        let value = wire.query_value("SELECT @@last_gtid").await?;
        Ok(value.filter(|v| !v.is_empty()))
    }
}

/// Whether `wsrep_sync_wait = mask` makes a statement of `class` wait for
/// the cluster first (Galera's bits: 1 reads and BEGIN, 2 UPDATE and
/// DELETE, 4 INSERT and REPLACE, 8 SHOW; writes are not told apart here,
/// so bit 2 or 4 makes every write wait — waiting more is always safe).
fn causal_wait_applies(mask: u64, class: &StatementClass) -> bool {
    match class {
        StatementClass::Read | StatementClass::Begin(_) => mask & (1 | 8) != 0,
        StatementClass::Write => mask & (2 | 4) != 0,
        _ => false,
    }
}

/// Whether a command may run on a node outside the primary component (as
/// with Galera: status and settings, never data): quitting, pinging,
/// closing a statement, and `SHOW`, `SET`, `USE`, `ROLLBACK` queries.
fn allowed_outside_primary(payload: &[u8]) -> bool {
    match payload.first() {
        Some(&(com::QUIT | com::PING | com::STMT_CLOSE | com::INIT_DB)) => true,
        Some(&com::QUERY) => {
            let text = &payload[1..];
            if classify::split_statements(text).len() > 1 {
                return false;
            }
            match classify::classify(text) {
                StatementClass::Set { .. }
                | StatementClass::Session
                | StatementClass::Rollback { .. }
                | StatementClass::Empty => true,
                StatementClass::Read => {
                    let text = String::from_utf8_lossy(text);
                    first_word_is_show(&text) || only_reads_variables(&text)
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// `text` after its leading whitespace and comments (`None` if a comment
/// is unterminated or executable, `/*! … */`).
fn after_comments(text: &str) -> Option<&str> {
    let mut rest = text.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("/*") {
            match r.find("*/") {
                Some(end) if !r.starts_with('!') => rest = r[end + 2..].trim_start(),
                _ => return None,
            }
        } else if rest.starts_with("--") || rest.starts_with('#') {
            rest = rest[rest.find('\n')? + 1..].trim_start();
        } else {
            return Some(rest);
        }
    }
}

/// `rest` without its first word if that is `word` (any case) followed by
/// whitespace.
fn strip_word<'t>(rest: &'t str, word: &str) -> Option<&'t str> {
    let head = rest.get(..word.len())?;
    let tail = &rest[word.len()..];
    (head.eq_ignore_ascii_case(word) && tail.starts_with(|c: char| c.is_whitespace()))
        .then(|| tail.trim_start())
}

/// Whether the statement's first word (after comments) is `SHOW`.
fn first_word_is_show(text: &str) -> bool {
    after_comments(text).is_some_and(|rest| strip_word(rest, "SHOW").is_some())
}

/// Whether the statement only reads server variables — `SELECT @@a, @@b
/// AS x` and nothing else — as client libraries do when they connect:
/// it reads no replicated data, so a node outside the primary component
/// may answer it.
fn only_reads_variables(text: &str) -> bool {
    let Some(mut rest) = after_comments(text).and_then(|r| strip_word(r, "SELECT")) else {
        return false;
    };
    let name = |s: &str| {
        s.bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
            .count()
    };
    loop {
        let Some(variable) = rest.strip_prefix("@@") else {
            return false;
        };
        let len = name(variable);
        if len == 0 {
            return false;
        }
        rest = variable[len..].trim_start();
        if let Some(alias) = strip_word(rest, "AS") {
            rest = alias;
        }
        let alias = name(rest);
        if alias > 0 && !rest[..alias].contains('.') {
            rest = rest[alias..].trim_start();
        }
        match rest.strip_prefix(',') {
            Some(next) => rest = next.trim_start(),
            None => {
                return rest
                    .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
                    .is_empty();
            }
        }
    }
}

/// The statement id of a `COM_STMT_*` command.
fn statement_id(payload: &[u8]) -> Option<u32> {
    let id = payload.get(1..5)?;
    Some(u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
}

/// Relay everything to the client.
fn forward() -> Relay {
    Relay {
        to_client: true,
        ..Relay::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Vec<u8> {
        query_payload(sql)
    }

    #[test]
    fn outside_the_primary_component_only_status_and_settings_run() {
        for allowed in [
            "SHOW STATUS LIKE 'wsrep%'",
            "/* probe */ show global status",
            "SET SESSION wsrep_sync_wait = 1",
            "USE d",
            "ROLLBACK",
            "",
            // What client libraries ask when they connect.
            "SELECT @@max_allowed_packet, @@wait_timeout",
            "select @@session.auto_increment_increment AS ai,@@version v;",
        ] {
            assert!(allowed_outside_primary(&query(allowed)), "{allowed}");
        }
        for refused in [
            "SELECT 1",
            "SELECT @@version, (SELECT COUNT(*) FROM t)",
            "SELECT @@version, f()",
            "SELECT @@a FROM t",
            "SELECT @@",
            "SELECT @@a b c",
            "SELECT @@a; DELETE FROM t",
            "INSERT INTO t VALUES (1)",
            "COMMIT",
            "SHOW STATUS; DELETE FROM t",
            "SHOWX",
            "/*!50000 SHOW */ TABLES",
            "CREATE TABLE t (id INT PRIMARY KEY)",
        ] {
            assert!(!allowed_outside_primary(&query(refused)), "{refused}");
        }
        assert!(allowed_outside_primary(&[com::PING]));
        assert!(!allowed_outside_primary(&[com::STMT_EXECUTE, 1, 0, 0, 0]));
        assert!(!allowed_outside_primary(&[]));
    }
}
