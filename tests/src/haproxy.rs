//! A real HAProxy in front of a [`ReplicationCluster`], health-checking
//! each node's `/health`, and a client loop writing through it that records
//! every outcome — what failover and rolling-restart tests measure.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;

use crate::replication_cluster::ReplicationCluster;

/// An HAProxy process, killed on drop.
pub struct Haproxy {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    /// HAProxy on `127.0.0.1:port` in front of every node's client port,
    /// checking `/health` every 200 ms (down after 2 failures, up after 2
    /// successes; a node marked down has its sessions shut).
    pub fn start(c: &ReplicationCluster, dir: &std::path::Path, port: u16) -> Self {
        let mut servers = String::new();
        for i in 0..c.len() {
            let sidecar = c.sidecar(i);
            let http_port = c
                .http_address(i)
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .expect("HTTP port");
            servers.push_str(&format!(
                "  server node{} {}:{} check port {http_port}\n",
                i + 1,
                sidecar.host,
                sidecar.port
            ));
        }
        let config = format!(
            "global\n\
             \x20 maxconn 256\n\
             defaults\n\
             \x20 mode tcp\n\
             \x20 timeout connect 2s\n\
             \x20 timeout client 120s\n\
             \x20 timeout server 120s\n\
             \x20 retries 3\n\
             \x20 option redispatch\n\
             frontend mariadb\n\
             \x20 bind 127.0.0.1:{port}\n\
             \x20 default_backend nodes\n\
             backend nodes\n\
             \x20 balance roundrobin\n\
             \x20 option httpchk GET /health\n\
             \x20 http-check expect status 200\n\
             \x20 default-server inter 200 fall 2 rise 2 on-marked-down shutdown-sessions\n\
             {servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).expect("haproxy.cfg");
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).expect("haproxy log");
        let child = std::process::Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("haproxy log"))
            .stderr(out)
            .spawn()
            .expect("haproxy (scripts/deps.sh installs it)");
        Haproxy { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until connections through `front` reach all `n` servers
    /// (round robin): HAProxy is up and sees every node healthy.
    pub async fn wait_routing_to_all(
        c: &ReplicationCluster,
        front: &mysql_async::OptsBuilder,
        n: usize,
        timeout: Duration,
    ) {
        c.eventually("HAProxy to route to every node", timeout, async || {
            let mut seen = BTreeSet::new();
            for _ in 0..2 * n {
                let mut conn = mysql_async::Conn::new(front.clone()).await.ok()?;
                let id: Option<u32> = conn.query_first("SELECT @@server_id").await.ok()?;
                seen.insert(id?);
                let _ = conn.disconnect().await;
            }
            (seen.len() == n).then_some(())
        })
        .await;
    }
}

/// What a client loop saw.
#[derive(Debug, Default)]
pub struct LoopRecord {
    /// Acknowledged inserts: id, and when.
    pub acknowledged: Vec<(i64, Instant)>,
    /// Failed attempts: when, and the error; "UNEXPECTED: …" when the
    /// loop's classifier did not expect it.
    pub errors: Vec<(Instant, String)>,
    /// The node (server_id) of the last acknowledged insert.
    pub last_server: Option<u32>,
}

impl LoopRecord {
    /// The longest time without an acknowledged insert between `from` and
    /// the last acknowledgement.
    pub fn longest_stall(&self, from: Instant) -> Duration {
        let mut last = from;
        let mut stall = Duration::ZERO;
        for (_, at) in self.acknowledged.iter().filter(|(_, at)| *at > from) {
            stall = stall.max(at.duration_since(last));
            last = *at;
        }
        stall
    }

    /// Ids of the acknowledged inserts.
    pub fn acknowledged_ids(&self) -> BTreeSet<i64> {
        self.acknowledged.iter().map(|(id, _)| *id).collect()
    }

    /// Errors the classifier did not expect.
    pub fn unexpected(&self) -> Vec<&(Instant, String)> {
        self.errors
            .iter()
            .filter(|(_, e)| e.starts_with("UNEXPECTED"))
            .collect()
    }
}

/// One client through a load balancer: a connection, reconnected after any
/// error, each iteration one autocommit `INSERT INTO t VALUES (id,
/// @@server_id)` of a fresh id (never retried: an insert whose outcome is
/// unknown stays unknown).
pub struct ClientLoop {
    record: Arc<Mutex<LoopRecord>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ClientLoop {
    /// Start the loop against `front`; `expected` says which errors are
    /// expected (the others are recorded as UNEXPECTED).
    pub fn start(
        front: mysql_async::OptsBuilder,
        expected: fn(&mysql_async::Error) -> bool,
    ) -> Self {
        let record = Arc::new(Mutex::new(LoopRecord::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (record, stop) = (record.clone(), stop.clone());
            tokio::spawn(async move {
                let mut conn: Option<mysql_async::Conn> = None;
                let mut next_id: i64 = 1;
                let mut failures: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let attempt = async {
                        if conn.is_none() {
                            conn = Some(mysql_async::Conn::new(front.clone()).await?);
                        }
                        let c = conn.as_mut().expect("connection");
                        c.query_drop(format!("INSERT INTO t VALUES ({next_id}, @@server_id)"))
                            .await?;
                        let server: Option<u32> = c.query_first("SELECT @@server_id").await?;
                        Ok::<_, mysql_async::Error>(server)
                    };
                    let outcome = tokio::time::timeout(Duration::from_secs(30), attempt).await;
                    let now = Instant::now();
                    {
                        let mut r = record.lock().expect("record");
                        match outcome {
                            Ok(Ok(server)) => {
                                r.acknowledged.push((next_id, now));
                                r.last_server = server;
                            }
                            Ok(Err(e)) => {
                                let text = if expected(&e) {
                                    format!("{e}")
                                } else {
                                    format!("UNEXPECTED: {e:?}")
                                };
                                r.errors.push((now, text));
                                conn = None;
                            }
                            Err(_) => {
                                r.errors
                                    .push((now, "UNEXPECTED: no answer within 30 s".into()));
                                conn = None;
                            }
                        }
                    }
                    next_id += 1;
                    if conn.is_none() {
                        // A client's reconnect backoff: 20 ms, doubling with
                        // each failure in a row up to 200 ms.
                        failures += 1;
                        let backoff = 20u64 << (failures - 1).min(4);
                        tokio::time::sleep(Duration::from_millis(backoff.min(200))).await;
                    } else {
                        failures = 0;
                    }
                }
            })
        };
        Self { record, stop, task }
    }

    pub fn acknowledged(&self) -> usize {
        self.record.lock().expect("record").acknowledged.len()
    }

    /// Acknowledged inserts after `t`.
    pub fn acknowledged_after(&self, t: Instant) -> usize {
        let r = self.record.lock().expect("record");
        r.acknowledged.iter().filter(|(_, at)| *at > t).count()
    }

    pub fn last_server(&self) -> Option<u32> {
        self.record.lock().expect("record").last_server
    }

    /// Stop the loop; its final record.
    pub async fn finish(self) -> LoopRecord {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the client loop stops")
            .expect("client loop task");
        std::mem::take(&mut *self.record.lock().expect("record"))
    }
}
