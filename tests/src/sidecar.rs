//! The real `replicator run` binary beside a [`crate::TestServer`], as a
//! one-node cluster: started, waited for until clients can connect,
//! killed or stopped like a real process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::TestServer;

/// The client account the tests use through the sidecar.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-pw";

/// A running sidecar.
pub struct Sidecar {
    child: Child,
    /// The address it listens on, for clients and for the group.
    pub host: String,
    /// Its client port.
    pub port: u16,
    /// Its group (node-to-node) port.
    pub group_port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    /// Extra environment for the process (e.g. failpoints).
    env: Vec<(String, String)>,
}

/// Create the test client account and database `d` on `server`.
pub async fn prepare_server(server: &TestServer) {
    use mysql_async::prelude::*;
    let mut root = server.root_conn().await.expect("root connection");
    root.query_drop(format!(
        "CREATE USER IF NOT EXISTS {APP_USER}@'%' IDENTIFIED BY '{APP_PASSWORD}'; \
         GRANT ALL ON *.* TO {APP_USER}@'%'; CREATE DATABASE IF NOT EXISTS d"
    ))
    .await
    .expect("create the test account");
}

impl Sidecar {
    /// Start a new one-node cluster in `dir` in front of `server`.
    pub async fn bootstrap(server: &TestServer, dir: &Path, extra: &[&str]) -> Self {
        let port = crate::ports::free_port();
        let group_port = crate::ports::free_port();
        let mut args = vec![
            "--bootstrap",
            "--heartbeat-ms",
            "50",
            "--election-timeout-min-ms",
            "300",
            "--election-timeout-max-ms",
            "600",
        ];
        args.extend_from_slice(extra);
        Self::start(server, dir, "127.0.0.1", (port, group_port), &args).await
    }

    /// Start a sidecar in `dir` in front of `server`, serving clients on
    /// `host:ports.0` and the group on `host:ports.1`, with `args` after
    /// those (how it enters its cluster — `--bootstrap` or `--join
    /// ADDRESS` — and any other flags). Returns once clients can connect.
    pub async fn start(
        server: &TestServer,
        dir: &Path,
        host: &str,
        (port, group_port): (u16, u16),
        args: &[&str],
    ) -> Self {
        let mut all: Vec<String> = vec![
            "run".into(),
            "--listen".into(),
            format!("{host}:{port}"),
            "--mariadb-socket".into(),
            server.config().socket().display().to_string(),
            "--user".into(),
            "root".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--secret".into(),
            "test-secret".into(),
            "--group-listen".into(),
            format!("{host}:{group_port}"),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let child = spawn(&all, dir, &[]);
        let mut sidecar = Self {
            child,
            host: host.to_string(),
            port,
            group_port,
            dir: dir.to_path_buf(),
            args: all,
            env: Vec::new(),
        };
        sidecar.wait_ready().await;
        sidecar
    }

    /// `host:port` of its group endpoint, what `--join` takes.
    pub fn group_address(&self) -> String {
        format!("{}:{}", self.host, self.group_port)
    }

    /// Start it again with the same arguments (after a kill or stop).
    pub async fn restart(&mut self) {
        self.child = spawn(&self.args, &self.dir, &self.env);
        self.wait_ready().await;
    }

    /// Extra environment from the next (re)start on, replacing any earlier.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "replicator exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            if let Ok(conn) = mysql_async::Conn::new(self.opts()).await {
                let _ = conn.disconnect().await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replicator not ready in 60 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The replicator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("replicator.log")).unwrap_or_default()
    }

    /// Client options for the test account, database `d`.
    pub fn opts(&self) -> mysql_async::OptsBuilder {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(APP_USER))
            .pass(Some(APP_PASSWORD))
            .db_name(Some("d"))
            .prefer_socket(false)
    }

    pub async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::new(self.opts())
            .await
            .expect("connect through the replicator")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM (a graceful stop), and wait up to `timeout` for the exit.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        self.wait_exit(timeout).await
    }

    /// The process's exit, if it has exited (e.g. stopped itself).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The last committed seqno the node recorded (its position file).
    pub fn position(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("position"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn spawn(args: &[String], dir: &Path, env: &[(String, String)]) -> Child {
    std::fs::create_dir_all(dir).expect("sidecar dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("replicator.log"))
        .expect("log file");
    Command::new(crate::binary("replicator"))
        .args(args)
        .env("RUST_LOG", "info,openraft=warn")
        // The reason it stopped, not a backtrace of where the error was
        // made, ends its log (panics still get their backtrace).
        .env("RUST_LIB_BACKTRACE", "0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start replicator")
}
