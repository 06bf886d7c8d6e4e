//! A cluster of `n` nodes on this machine, each a real MariaDB with the real
//! `replicator run` in front of it, as the product runs: node 1 bootstraps
//! the cluster, the others join it through node 1's group address.
//!
//! Node `i` (0-based in the API, "node i+1" in messages) has a loopback
//! address of its own, `127.0.0.{i+1}`, as if it were its own host: its
//! replicator serves clients and the group there, and its MariaDB (reached
//! by the replicator through its socket) listens there too. All nodes use
//! the same four port numbers (client, group, MariaDB, HTTP), drawn once
//! per cluster from this test process's port range, so a partition of one
//! host can later be made per port. Each replicator serves `/health` and
//! `/metrics` on its address's HTTP port ([`ReplicationCluster::http_address`]).
//!
//! Each MariaDB has its own `server_id` (`i+1`), as a real cluster's would.
//! Waiting is always polling a condition with a deadline; a timeout panics
//! with the tail of every replicator's log.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::Duration;

use mysql_async::prelude::*;
use replicator::mariadb_server::{MariadbServer, ServerConfig};

use crate::TestServer;
use crate::sidecar::{Sidecar, prepare_server};

/// How long starting, joining and catching up may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a change committed on one node may take to show on the others.
pub const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one client statement may take (a commit waits for the cluster
/// up to the replicator's commit timeout, 30 s by default, and a node that
/// cannot reach a quorum may hold it longer) before the test fails.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(90);
/// Election timing short enough that losing the leader costs about a
/// second, not the product's default 1–2 s: for tests that kill, stop or
/// cut off nodes (`start_with(n, FAST_ELECTIONS)`; also garbd's flags).
pub const FAST_ELECTIONS: &[&str] = &[
    "--heartbeat-ms",
    "100",
    "--election-timeout-min-ms",
    "500",
    "--election-timeout-max-ms",
    "1000",
];
/// How long one status query or direct server query of a poll may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One node: its MariaDB and the replicator in front of it.
pub struct Node {
    pub server: TestServer,
    pub sidecar: Sidecar,
}

/// A running cluster; every process is killed on drop. The replicators'
/// directories (logs, ordered logs) are kept when a test fails.
pub struct ReplicationCluster {
    // Dropped before `dir` (field order): the processes die first.
    nodes: Vec<Node>,
    /// The arbitrator (`garbd`), if started.
    arbitrator: Option<tokio::process::Child>,
    /// The HTTP port (`/health`, `/metrics`) of every node.
    http_port: u16,
    dir: tempfile::TempDir,
}

impl Drop for ReplicationCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "replicator directories kept in {}",
                self.dir.path().display()
            );
        }
    }
}

/// The loopback address of node `i`.
pub fn host(i: usize) -> String {
    format!("127.0.0.{}", i + 1)
}

/// A MariaDB for node `i`, on its own address, with its own server_id.
async fn start_server(i: usize, port: u16) -> TestServer {
    let dir = tempfile::Builder::new()
        .prefix("repl-test-")
        .tempdir()
        .expect("temporary directory");
    let mut config = ServerConfig::new(dir.path(), port);
    config.bind_address = host(i);
    config.server_id = i as u32 + 1;
    config.buffer_pool_size = "32M".into();
    let server = MariadbServer::start(config)
        .await
        .unwrap_or_else(|e| panic!("node{}: MariaDB did not start: {e}", i + 1));
    TestServer { server, _dir: dir }
}

impl ReplicationCluster {
    /// Start `n` nodes and wait until every one serves clients and sees
    /// `n` voters in a primary component, Synced.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, &[]).await
    }

    /// [`Self::start`] with extra `replicator run` flags on every node.
    pub async fn start_with(n: usize, extra: &[&str]) -> Self {
        assert!((1..=9).contains(&n), "1 to 9 nodes, not {n}");
        let dir = tempfile::Builder::new()
            .prefix("repl-cluster-")
            .tempdir()
            .expect("temporary directory");
        let client_port = crate::ports::free_port();
        let group_port = crate::ports::free_port();
        let mariadb_port = crate::ports::free_port();
        let http_port = crate::ports::free_port();

        // The servers start in parallel; each gets the test account.
        let starting: Vec<_> = (0..n)
            .map(|i| {
                tokio::spawn(async move {
                    let server = start_server(i, mariadb_port).await;
                    prepare_server(&server).await;
                    server
                })
            })
            .collect();
        let mut servers = Vec::new();
        for s in starting {
            servers.push(s.await.expect("MariaDB start task"));
        }

        // Node 1 bootstraps; the others join through it, one at a time
        // (each returns once its client port is open). Timings are the
        // product's defaults unless `extra` says otherwise.
        let mut nodes: Vec<Node> = Vec::new();
        let mut join = String::new();
        for (i, server) in servers.into_iter().enumerate() {
            let http = format!("{}:{http_port}", host(i));
            let mut args: Vec<&str> = if i == 0 {
                vec!["--bootstrap"]
            } else {
                vec!["--join", &join]
            };
            args.extend_from_slice(&["--http-listen", &http]);
            args.extend_from_slice(extra);
            let sidecar = Sidecar::start(
                &server,
                &dir.path().join(format!("node{}", i + 1)),
                &host(i),
                (client_port, group_port),
                &args,
            )
            .await;
            if i == 0 {
                join = sidecar.group_address();
            }
            nodes.push(Node { server, sidecar });
        }
        let cluster = Self {
            nodes,
            arbitrator: None,
            http_port,
            dir,
        };
        cluster.wait_cluster_size(n, SETUP_TIMEOUT).await;
        cluster.wait_synced(SETUP_TIMEOUT).await;
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Node `i`'s MariaDB, for direct checks as root (over its socket).
    pub fn server(&self, i: usize) -> &TestServer {
        &self.nodes[i].server
    }

    pub fn sidecar(&self, i: usize) -> &Sidecar {
        &self.nodes[i].sidecar
    }

    /// `host:port` where node `i`'s replicator serves `/health` and
    /// `/metrics`.
    pub fn http_address(&self, i: usize) -> String {
        format!("{}:{}", self.nodes[i].sidecar.host, self.http_port)
    }

    /// Client options through node `i`'s replicator: the test account,
    /// database `d`.
    pub fn opts(&self, i: usize) -> mysql_async::OptsBuilder {
        self.nodes[i].sidecar.opts()
    }

    /// A client connection through node `i`'s replicator, as the test
    /// account, database `d`.
    pub async fn conn(&self, i: usize) -> Client {
        let connect = mysql_async::Conn::new(self.opts(i));
        match tokio::time::timeout(STATEMENT_TIMEOUT, connect).await {
            Ok(Ok(conn)) => Client {
                conn,
                node: i,
                logs: self.log_files(),
            },
            Ok(Err(e)) => panic!("cannot connect through node{}: {e}\n{}", i + 1, self.logs()),
            Err(_) => panic!(
                "connecting through node{} took over {STATEMENT_TIMEOUT:?}\n{}",
                i + 1,
                self.logs()
            ),
        }
    }

    /// SIGKILL node `i`'s replicator (its MariaDB keeps running).
    pub async fn kill(&mut self, i: usize) {
        self.nodes[i].sidecar.kill().await;
    }

    /// Start the real arbitrator (`garbd`) on the next node's address,
    /// joined through node 1, with `extra` flags (timings must match the
    /// nodes'); returns once every node counts it as a voter.
    pub async fn start_arbitrator(&mut self, extra: &[&str]) {
        let seed = self.nodes[0].sidecar.group_address();
        let port = seed.rsplit_once(':').map(|(_, p)| p).expect("group port");
        let listen = format!("{}:{port}", host(self.nodes.len()));
        let dir = self.dir.path().join("garbd");
        std::fs::create_dir_all(&dir).expect("garbd dir");
        let log = std::fs::File::create(dir.join("garbd.log")).expect("garbd log");
        let child = tokio::process::Command::new(crate::binary("garbd"))
            .args(["--group", "replicator", "--secret", "test-secret"])
            .args(["--address", &seed, "--listen", &listen])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("garbd log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start garbd");
        self.arbitrator = Some(child);
        self.wait_cluster_size(self.nodes.len() + 1, SETUP_TIMEOUT)
            .await;
    }

    /// SIGTERM node `i`'s replicator (a graceful stop) and wait until it
    /// has exited, successfully; how long that took.
    pub async fn stop_gracefully(&mut self, i: usize) -> Duration {
        let started = std::time::Instant::now();
        let status = self.nodes[i].sidecar.terminate(SETUP_TIMEOUT).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "node{}'s replicator did not stop cleanly on SIGTERM: {status:?}\n{}",
            i + 1,
            self.logs()
        );
        started.elapsed()
    }

    /// Node `i`'s replicator gets `env` (e.g. failpoints) from its next
    /// restart on; an empty `env` removes it.
    pub fn set_env(&mut self, i: usize, env: &[(&str, &str)]) {
        self.nodes[i].sidecar.set_env(env);
    }

    /// Start node `i`'s replicator again with its arguments and data;
    /// returns once it has caught up with the cluster and serves clients.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].sidecar.restart().await;
    }

    /// Node `i`'s replicator log so far.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].sidecar.log()
    }

    /// Every node's replicator log file.
    pub fn log_files(&self) -> LogFiles {
        LogFiles(
            self.nodes
                .iter()
                .map(|n| n.sidecar.dir.join("replicator.log"))
                .collect(),
        )
    }

    /// For failure messages: every node's replicator log, its errors and
    /// its last lines.
    pub fn logs(&self) -> String {
        self.log_files().render()
    }

    /// Poll `check` every 50 ms until it returns `Some`, or panic after
    /// `timeout` with `what` and the replicators' logs.
    pub async fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(value)) = tokio::time::timeout_at(deadline, check()).await {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `i`'s `wsrep%` status, through its replicator.
    /// `None` if it does not answer within a few seconds.
    pub async fn status(&self, i: usize) -> Option<BTreeMap<String, String>> {
        let probe = async {
            let mut c = mysql_async::Conn::new(self.opts(i)).await.ok()?;
            let rows: Vec<(String, String)> = c.query("SHOW STATUS LIKE 'wsrep%'").await.ok()?;
            let _ = c.disconnect().await;
            Some(rows.into_iter().collect())
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe)
            .await
            .ok()
            .flatten()
    }

    /// Node `i`'s `wsrep_last_committed`, if it answers.
    pub async fn last_committed(&self, i: usize) -> Option<u64> {
        self.status(i)
            .await?
            .get("wsrep_last_committed")?
            .parse()
            .ok()
    }

    /// Wait until every node answers through its replicator with
    /// `wsrep_cluster_size` = `n`, `wsrep_cluster_status` = Primary and a
    /// settled (committed, not joint) membership.
    pub async fn wait_cluster_size(&self, n: usize, timeout: Duration) {
        let n = n.to_string();
        self.wait_every_node(&format!("report {n} voters, primary"), timeout, |s| {
            s.get("wsrep_cluster_size") == Some(&n)
                && s.get("wsrep_cluster_status").map(String::as_str) == Some("Primary")
                && s.get("wsrep_group_membership_settled").map(String::as_str) == Some("ON")
        })
        .await;
    }

    /// Wait until every node reports itself Synced (caught up with what
    /// the cluster committed when it became primary).
    pub async fn wait_synced(&self, timeout: Duration) {
        self.wait_every_node("be Synced", timeout, |s| {
            s.get("wsrep_local_state_comment").map(String::as_str) == Some("Synced")
        })
        .await;
    }

    /// Wait until every node's `wsrep%` status satisfies `done`.
    async fn wait_every_node(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&BTreeMap<String, String>) -> bool,
    ) {
        for i in 0..self.len() {
            self.eventually(&format!("node{} to {what}", i + 1), timeout, async || {
                done(&self.status(i).await?).then_some(())
            })
            .await;
        }
    }

    /// Rows of `sql` run as root directly on node `i`'s MariaDB (`None`
    /// if the query fails, e.g. the table does not exist there yet, or
    /// takes more than a few seconds).
    pub async fn query_server<T: FromRow + Send + 'static>(
        &self,
        i: usize,
        sql: &str,
    ) -> Option<Vec<T>> {
        let probe = async {
            let mut root = self.server(i).root_conn().await.ok()?;
            let rows = root.query(sql).await.ok();
            let _ = root.disconnect().await;
            rows
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe)
            .await
            .ok()
            .flatten()
    }

    /// Wait until `sql`, run as root on every node's MariaDB, returns
    /// `expected`.
    pub async fn wait_rows_everywhere<T>(&self, sql: &str, expected: &[T])
    where
        T: FromRow + Send + PartialEq + std::fmt::Debug + 'static,
    {
        let all: Vec<usize> = (0..self.len()).collect();
        self.wait_rows_on(&all, sql, expected).await;
    }

    /// Wait until `sql`, run as root on the MariaDB of each node in
    /// `nodes`, returns `expected`.
    pub async fn wait_rows_on<T>(&self, nodes: &[usize], sql: &str, expected: &[T])
    where
        T: FromRow + Send + PartialEq + std::fmt::Debug + 'static,
    {
        for &i in nodes {
            let mut last = None;
            let found = tokio::time::timeout(REPLICATION_TIMEOUT, async {
                loop {
                    let rows: Option<Vec<T>> = self.query_server(i, sql).await;
                    if rows.as_deref() == Some(expected) {
                        return;
                    }
                    last = rows;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            if found.is_err() {
                panic!(
                    "timed out after {REPLICATION_TIMEOUT:?} waiting for node{} to return \
                     {expected:?} for `{sql}`; it last returned {last:?} (None: no answer)\n{}",
                    i + 1,
                    self.logs()
                );
            }
        }
    }

    /// Wait until table `d.<table>` exists on every node's MariaDB (DDL
    /// through any node runs on every node).
    pub async fn wait_table_everywhere(&self, table: &str) {
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = 'd' AND table_name = '{table}'"
        );
        for i in 0..self.len() {
            self.eventually(
                &format!("table d.{table} to exist on node{}", i + 1),
                REPLICATION_TIMEOUT,
                async || {
                    let n: Vec<i64> = self.query_server(i, &sql).await?;
                    (n == [1]).then_some(())
                },
            )
            .await;
        }
    }

    /// Wait until every node reports the same `wsrep_last_committed`
    /// through its replicator; that seqno. Once clients have stopped
    /// writing, every acknowledged commit is then at or below it on every
    /// node — and a transaction started afterwards on any node has every
    /// earlier commit in its snapshot, so it cannot fail certification
    /// against them.
    pub async fn wait_same_last_committed(&self, timeout: Duration) -> u64 {
        let all: Vec<usize> = (0..self.len()).collect();
        self.wait_same_last_committed_on(&all, timeout).await
    }

    /// [`Self::wait_same_last_committed`] among `nodes` only (e.g. while
    /// another node is down).
    pub async fn wait_same_last_committed_on(&self, nodes: &[usize], timeout: Duration) -> u64 {
        let names: Vec<String> = nodes.iter().map(|i| format!("node{}", i + 1)).collect();
        self.eventually(
            &format!("{} to have the same last committed seqno", names.join(", ")),
            timeout,
            async || {
                let mut seen = Vec::new();
                for &i in nodes {
                    seen.push(self.last_committed(i).await?);
                }
                seen.windows(2).all(|w| w[0] == w[1]).then(|| seen[0])
            },
        )
        .await
    }

    /// `CHECKSUM TABLE d.<table>` on node `i`'s MariaDB, as root.
    pub async fn checksum(&self, i: usize, table: &str) -> Option<String> {
        let rows: Vec<(String, Option<String>)> = self
            .query_server(i, &format!("CHECKSUM TABLE d.`{table}`"))
            .await?;
        rows.into_iter().next().and_then(|r| r.1)
    }

    /// `SHOW CREATE TABLE d.<table>` on node `i`'s MariaDB, as root,
    /// without its ` AUTO_INCREMENT=N` counter (each node's counter is its
    /// own: nodes draw from different residue classes).
    pub async fn create_table(&self, i: usize, table: &str) -> Option<String> {
        let rows: Vec<(String, String)> = self
            .query_server(i, &format!("SHOW CREATE TABLE d.`{table}`"))
            .await?;
        rows.into_iter().next().map(|r| without_counter(&r.1))
    }

    /// Assert that every table in `tables` has the same definition and the
    /// same `CHECKSUM TABLE` on every node (checked once: call after
    /// waiting for the nodes to agree on their last committed seqno).
    pub async fn assert_tables_identical(&self, tables: &[&str]) {
        for table in tables {
            let mut sums = Vec::new();
            let mut defs = Vec::new();
            for i in 0..self.len() {
                sums.push(self.checksum(i, table).await);
                defs.push(self.create_table(i, table).await);
            }
            assert!(
                defs.iter().all(|d| d.is_some() && *d == defs[0]),
                "table d.{table} differs between nodes (definitions by node: {defs:#?})\n{}",
                self.logs()
            );
            assert!(
                sums.iter().all(|s| s.is_some() && *s == sums[0]),
                "CHECKSUM TABLE d.{table} differs between nodes: {sums:?}\n{}",
                self.logs()
            );
        }
    }

    /// SIGKILL node `i`'s MariaDB (its replicator keeps running), and
    /// reap it.
    pub async fn kill_server(&mut self, i: usize) {
        self.nodes[i].server.kill().await;
    }

    /// Start node `i`'s MariaDB again after [`Self::kill_server`], on the
    /// same data directory with the same settings (so InnoDB recovers from
    /// the crash); returns once it accepts connections.
    pub async fn restart_server(&mut self, i: usize) {
        assert!(
            self.nodes[i].server.pid().is_none(),
            "node{}'s MariaDB still runs: kill it first",
            i + 1
        );
        let config = self.nodes[i].server.config().clone();
        match MariadbServer::start(config).await {
            Ok(server) => self.nodes[i].server.server = server,
            Err(e) => panic!(
                "node{}: MariaDB did not restart: {e}\n{}",
                i + 1,
                self.logs()
            ),
        }
    }

    /// How node `i`'s replicator process ended, if it has (killed, or
    /// stopped by itself); `None` while it runs.
    pub async fn replicator_exit(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.nodes[i].sidecar.wait_exit(Duration::ZERO).await
    }

    /// Start again, one node after the other in `order`, node `i`'s
    /// MariaDB (when `servers`: after [`Self::kill_server`]) and then its
    /// replicator, without waiting for the replicator to serve before the
    /// next node starts (after a full-cluster crash none can before a
    /// quorum of them runs). Returns once every replicator restarted
    /// serves clients.
    pub async fn restart_nodes(&mut self, order: &[usize], servers: bool) {
        use std::future::Future;
        use std::pin::Pin;
        use std::task::Poll;

        let logs = self.log_files();
        let mut nodes: Vec<Option<&mut Node>> = self.nodes.iter_mut().map(Some).collect();
        let mut starting: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = Vec::new();
        for &i in order {
            let node = nodes[i].take().expect("each node restarts once");
            if servers {
                assert!(
                    node.server.pid().is_none(),
                    "node{}'s MariaDB still runs: kill it first",
                    i + 1
                );
                match MariadbServer::start(node.server.config().clone()).await {
                    Ok(server) => node.server.server = server,
                    Err(e) => panic!(
                        "node{}: MariaDB did not restart: {e}\n{}",
                        i + 1,
                        logs.render()
                    ),
                }
            }
            // Its first poll starts the process; then it waits until the
            // replicator serves clients.
            let mut ready = Box::pin(node.sidecar.restart());
            let done =
                std::future::poll_fn(|cx| Poll::Ready(ready.as_mut().poll(cx).is_ready())).await;
            if !done {
                starting.push(ready);
            }
        }
        std::future::poll_fn(|cx| {
            starting.retain_mut(|ready| ready.as_mut().poll(cx).is_pending());
            if starting.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// `definition` without its table option ` AUTO_INCREMENT=N`.
fn without_counter(definition: &str) -> String {
    const OPTION: &str = " AUTO_INCREMENT=";
    match definition.rfind(OPTION) {
        Some(at) => {
            let digits = definition[at + OPTION.len()..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            format!(
                "{}{}",
                &definition[..at],
                &definition[at + OPTION.len() + digits..]
            )
        }
        None => definition.to_string(),
    }
}

/// The replicators' log files, rendered into failure messages.
#[derive(Debug, Clone)]
pub struct LogFiles(Vec<PathBuf>);

impl LogFiles {
    /// Each log's error lines, then its last lines.
    pub fn render(&self) -> String {
        const LINES: usize = 40;
        let mut out = String::new();
        for (i, path) in self.0.iter().enumerate() {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(LINES);
            out.push_str(&format!(
                "---- node{} replicator log ({}, {} lines): errors, then the last {} ----\n",
                i + 1,
                path.display(),
                lines.len(),
                lines.len() - from,
            ));
            for line in lines[..from].iter().filter(|l| l.contains(" ERROR ")) {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str("  ...\n");
            for line in &lines[from..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// A client connection through one node's replicator. Its methods bound
/// each statement by [`STATEMENT_TIMEOUT`]: a statement that does not
/// return fails the test with the logs instead of hanging it. The raw
/// connection is reachable through `Deref`.
pub struct Client {
    conn: mysql_async::Conn,
    /// The node it goes through (0-based).
    pub node: usize,
    logs: LogFiles,
}

impl Client {
    /// Replace a connection the server closed (a brute-force abort ends
    /// the aborted session's connection after its 1213).
    pub async fn reopen(&mut self, opts: mysql_async::OptsBuilder) {
        let connect = mysql_async::Conn::new(opts);
        match tokio::time::timeout(STATEMENT_TIMEOUT, connect).await {
            Ok(Ok(conn)) => self.conn = conn,
            other => panic!("reconnecting through node{}: {other:?}", self.node + 1),
        }
    }

    fn bounded<T>(&self, sql: &str, outcome: Result<T, tokio::time::error::Elapsed>) -> T {
        outcome.unwrap_or_else(|_| {
            panic!(
                "`{sql}` through node{} did not return within {STATEMENT_TIMEOUT:?}\n{}",
                self.node + 1,
                self.logs.render()
            )
        })
    }

    /// Run `sql`, dropping any result.
    pub async fn exec(&mut self, sql: impl AsRef<str>) -> Result<(), mysql_async::Error> {
        let sql = sql.as_ref();
        let outcome = tokio::time::timeout(STATEMENT_TIMEOUT, self.conn.query_drop(sql)).await;
        self.bounded(sql, outcome)
    }

    /// Run `sql`, which must succeed: an error fails the test with the
    /// logs.
    pub async fn run(&mut self, sql: impl AsRef<str>) {
        let sql = sql.as_ref();
        if let Err(e) = self.exec(sql).await {
            panic!(
                "`{sql}` through node{} failed: {e}\n{}",
                self.node + 1,
                self.logs.render()
            );
        }
    }

    /// Rows of `sql`.
    pub async fn query<T: FromRow + Send + 'static>(
        &mut self,
        sql: impl AsRef<str>,
    ) -> Result<Vec<T>, mysql_async::Error> {
        let sql = sql.as_ref();
        let outcome = tokio::time::timeout(STATEMENT_TIMEOUT, self.conn.query(sql)).await;
        self.bounded(sql, outcome)
    }

    /// The first row of `sql`.
    pub async fn query_first<T: FromRow + Send + 'static>(
        &mut self,
        sql: impl AsRef<str>,
    ) -> Result<Option<T>, mysql_async::Error> {
        let sql = sql.as_ref();
        let outcome = tokio::time::timeout(STATEMENT_TIMEOUT, self.conn.query_first(sql)).await;
        self.bounded(sql, outcome)
    }

    /// The replicators' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.logs.render()
    }
}

impl Deref for Client {
    type Target = mysql_async::Conn;
    fn deref(&self) -> &mysql_async::Conn {
        &self.conn
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut mysql_async::Conn {
        &mut self.conn
    }
}
