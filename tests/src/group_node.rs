//! A `group-node` process (one member of the ordered log) driven by a
//! test: commands on its stdin, events from its stdout collected as JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Notify;

pub const SECRET: &str = "test-secret";

/// How long the cluster helpers wait for members to come up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How a node joins when it starts.
#[derive(Debug, Clone)]
pub enum Start {
    Bootstrap,
    Join(Vec<String>),
    /// Restart from its data directory.
    Resume,
}

pub struct GroupNode {
    pub name: String,
    pub address: String,
    pub data_dir: PathBuf,
    child: Child,
    stdin: ChildStdin,
    events: Arc<Mutex<Vec<Value>>>,
    notify: Arc<Notify>,
}

impl GroupNode {
    /// Start a member listening on `address` (`127.0.0.N:port`).
    pub async fn start(
        cluster: &str,
        address: &str,
        data_dir: &Path,
        how: Start,
        extra: &[&str],
    ) -> Self {
        let mut cmd = Command::new(crate::binary("group-node"));
        cmd.args(["--name", cluster, "--secret", SECRET, "--listen", address])
            .arg("--data-dir")
            .arg(data_dir)
            // Fast timing for tests; `extra` may override any of it.
            .args([
                "--heartbeat-ms",
                "50",
                "--election-timeout-min-ms",
                "300",
                "--election-timeout-max-ms",
                "600",
                "--rpc-timeout-ms",
                "1000",
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        match &how {
            Start::Bootstrap => {
                cmd.arg("--bootstrap");
            }
            Start::Join(seeds) => {
                cmd.args(["--join", &seeds.join(",")]);
            }
            Start::Resume => {}
        }
        let mut child = cmd.spawn().expect("spawn group-node");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        {
            let events = events.clone();
            let notify = notify.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        events.lock().unwrap().push(v);
                        notify.notify_waiters();
                    }
                }
                events
                    .lock()
                    .unwrap()
                    .push(serde_json::json!({"event": "exited"}));
                notify.notify_waiters();
            });
        }
        let node = Self {
            name: address.to_string(),
            address: address.to_string(),
            data_dir: data_dir.to_path_buf(),
            child,
            stdin,
            events,
            notify,
        };
        node.wait_event("started", Duration::from_secs(30), |e| {
            e["event"] == "started"
        })
        .await;
        node
    }

    /// Whether an event matching `pred` has been seen so far.
    pub fn seen(&self, pred: impl Fn(&Value) -> bool) -> bool {
        self.events.lock().unwrap().iter().any(pred)
    }

    /// Wait until an event matching `pred` has been seen (at any time since
    /// the start), and return it.
    pub async fn wait_event(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if let Some(v) = self.events.lock().unwrap().iter().find(|e| pred(e)) {
                return v.clone();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let tail: Vec<Value> = self
                    .events
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(5)
                    .cloned()
                    .collect();
                panic!(
                    "{}: timed out waiting for {what}; last events: {tail:?}",
                    self.name
                );
            }
        }
    }

    /// Ask for a fresh status report and return it.
    pub async fn status(&mut self) -> Value {
        let seen = self.events.lock().unwrap().len();
        self.send("status").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.notify.notified();
            if let Some(v) = self.events.lock().unwrap()[seen..]
                .iter()
                .find(|e| e["event"] == "status")
            {
                return v.clone();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("{}: no status report", self.name);
            }
        }
    }

    /// Poll the status until `pred` holds.
    pub async fn wait_status(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: timed out waiting for {what}; last status {s}",
                self.name
            );
            // Status has no change notification; poll it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The latest primary status reported.
    pub fn primary(&self) -> Option<bool> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["event"] == "primary")
            .and_then(|e| e["primary"].as_bool())
    }

    /// Wait until the node reports the given primary status.
    pub async fn wait_primary(&self, primary: bool, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if self.primary() == Some(primary) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("{}: not primary={primary} within {timeout:?}", self.name);
            }
        }
    }

    pub async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Propose `id` and wait for the outcome: `Ok(seqno)` or `Err(error)`.
    pub async fn propose(&mut self, id: &str, timeout: Duration) -> Result<u64, String> {
        self.send(&format!("propose {id}")).await;
        let e = self
            .wait_event(&format!("outcome of {id}"), timeout, |e| {
                e["id"] == id && (e["event"] == "proposed" || e["event"] == "propose_failed")
            })
            .await;
        match e["event"].as_str() {
            Some("proposed") => Ok(e["seqno"].as_u64().unwrap()),
            _ => Err(e["error"].as_str().unwrap_or("").to_string()),
        }
    }

    /// Committed entries seen so far: seqno → id.
    pub fn committed(&self) -> BTreeMap<u64, String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "committed")
            .map(|e| {
                (
                    e["seqno"].as_u64().unwrap(),
                    e["id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Wait until entry `id` has been delivered here.
    pub async fn wait_committed(&self, id: &str, timeout: Duration) -> u64 {
        let e = self
            .wait_event(&format!("commit of {id}"), timeout, |e| {
                e["event"] == "committed" && e["id"] == id
            })
            .await;
        e["seqno"].as_u64().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// SIGTERM (graceful leave) and wait for a clean exit.
    pub async fn terminate(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s of SIGTERM")
            .unwrap();
        assert!(
            status.success(),
            "{}: graceful stop exited with {status}",
            self.name
        );
    }
}

/// A fresh loopback host for each member of each test, so parallel tests
/// never share an address.
pub fn addresses(n: usize) -> Vec<String> {
    let port = crate::ports::free_port();
    // The port block is unique to this process; hosts 127.0.0.2… are free
    // to reuse with it.
    (0..n)
        .map(|i| format!("127.0.0.{}:{port}", 2 + i))
        .collect()
}

/// Start `n` members of a new cluster `name` (the first bootstraps, the
/// others join it), each with the extra flags `extra`, and wait until all
/// are voters and primary.
pub async fn cluster(
    dir: &std::path::Path,
    name: &str,
    n: usize,
    extra: &[&str],
) -> (Vec<String>, Vec<GroupNode>) {
    let addrs = addresses(n);
    let mut nodes =
        vec![GroupNode::start(name, &addrs[0], &dir.join("n0"), Start::Bootstrap, extra).await];
    nodes[0].wait_primary(true, SETUP_TIMEOUT).await;
    for (i, addr) in addrs.iter().enumerate().skip(1) {
        let node = GroupNode::start(
            name,
            addr,
            &dir.join(format!("n{i}")),
            Start::Join(vec![addrs[0].clone()]),
            extra,
        )
        .await;
        nodes.push(node);
    }
    // Every member is a voter and primary.
    for node in &nodes {
        node.wait_primary(true, SETUP_TIMEOUT).await;
    }
    wait_voters(&mut nodes[0], n).await;
    (addrs, nodes)
}

/// Wait until `node` sees `n` voters in a committed, single (not joint)
/// membership: only then does every one of them count towards quorum.
pub async fn wait_voters(node: &mut GroupNode, n: usize) {
    node.wait_status(
        &format!("{n} voters, membership settled"),
        SETUP_TIMEOUT,
        |s| {
            s["voters"].as_array().is_some_and(|v| v.len() == n)
                && s["membership_settled"].as_bool() == Some(true)
        },
    )
    .await;
}
