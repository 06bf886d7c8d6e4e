//! A MariaDB server run by us: private data directory, port and socket,
//! configured the way the replicator requires (DESIGN.md, *Capture*).
//!
//! Owns the `mariadbd` child process: initializing the data directory,
//! starting, waiting until it accepts connections, and stopping (cleanly or
//! by SIGKILL for crash tests). Used by `replicator cluster` and by every
//! test that needs a real database. Must not know about replication.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio::process::{Child, Command};

/// How long a server may take to initialize or start before we give up.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a clean shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to run one server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Holds `data/`, the socket, the binlog and the error log.
    pub dir: PathBuf,
    /// Address the server listens on for TCP (loopback in tests).
    pub bind_address: String,
    /// TCP port; `0` means no TCP at all (socket only).
    pub port: u16,
    /// Unique per node (binlog events carry it).
    pub server_id: u32,
    /// InnoDB buffer pool size, e.g. `"128M"`.
    pub buffer_pool_size: String,
    /// Extra `--option=value` arguments, appended last.
    pub extra_args: Vec<String>,
}

impl ServerConfig {
    /// A server in `dir` on `127.0.0.1:port` with the defaults below.
    pub fn new(dir: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            dir: dir.into(),
            bind_address: "127.0.0.1".into(),
            port,
            server_id: 1,
            buffer_pool_size: "128M".into(),
            extra_args: Vec::new(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("mariadb.sock")
    }

    /// The server's own temporary directory (never the shared `/tmp`,
    /// where concurrent servers' temporary files could meet).
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// Program, arguments and environment of the server process, exactly
    /// as [`MariadbServer::start`] runs it (recorded so that a killed
    /// server can be restarted by hand the same way).
    pub fn command_line(&self) -> Result<CommandLine, ServerError> {
        let program = find_program(&["/usr/sbin/mariadbd", "/usr/bin/mariadbd"])?;
        let env = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            ("TMPDIR".to_string(), self.tmp_dir().display().to_string()),
        ];
        Ok(CommandLine {
            program,
            args: self.args(),
            env,
        })
    }

    /// The server's command line: the settings DESIGN.md requires of a
    /// managed server, and durability on every commit.
    fn args(&self) -> Vec<String> {
        let dir = self.dir.display();
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", self.data_dir().display()),
            format!("--socket={}", self.socket().display()),
            format!("--pid-file={dir}/mariadb.pid"),
            format!("--log-error={}", self.error_log().display()),
            format!("--tmpdir={}", self.tmp_dir().display()),
            format!("--server-id={}", self.server_id),
            format!("--log-bin={dir}/binlog"),
            "--binlog-format=ROW".into(),
            "--binlog-row-image=FULL".into(),
            "--innodb-snapshot-isolation=ON".into(),
            "--innodb-flush-log-at-trx-commit=1".into(),
            "--sync-binlog=1".into(),
            format!("--innodb-buffer-pool-size={}", self.buffer_pool_size),
            "--character-set-server=utf8mb4".into(),
            "--skip-name-resolve".into(),
            // Write-sets of large transactions are applied as one BINLOG
            // statement; rows bigger than one 16 MiB packet must pass.
            "--max-allowed-packet=1G".into(),
            "--user=root".into(),
        ];
        if self.port == 0 {
            args.push("--skip-networking".into());
        } else {
            args.push(format!("--bind-address={}", self.bind_address));
            args.push(format!("--port={}", self.port));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// A process's program, arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub program: &'static str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Why a server could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "`{program}` not found: install MariaDB (apt-get install mariadb-server mariadb-client)"
    )]
    NotInstalled { program: &'static str },
    #[error("could not run `{program}`: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("initializing {dir} failed ({status}): {output}")]
    Install {
        dir: PathBuf,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("mariadbd in {dir} exited during start-up ({status}); error log:\n{log}")]
    DiedOnStart {
        dir: PathBuf,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("mariadbd in {dir} not accepting connections after {secs} s; last error: {last}")]
    StartTimeout {
        dir: PathBuf,
        secs: u64,
        last: String,
    },
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running `mariadbd`. Dropping it kills the process (tests never leave
/// servers behind); call [`MariadbServer::stop`] for a clean shutdown.
#[derive(Debug)]
pub struct MariadbServer {
    config: ServerConfig,
    child: Option<Child>,
}

fn find_program(candidates: &[&'static str]) -> Result<&'static str, ServerError> {
    for c in candidates {
        if Path::new(c).exists() {
            return Ok(c);
        }
    }
    Err(ServerError::NotInstalled {
        program: candidates[0],
    })
}

fn tail_of(path: &Path, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

impl MariadbServer {
    /// Initialize the data directory if it is new, start the server and
    /// wait until it accepts connections as `root` on its socket.
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ServerError::Io { path, source }
        };
        tokio::fs::create_dir_all(&config.dir)
            .await
            .map_err(io(&config.dir))?;
        tokio::fs::create_dir_all(config.tmp_dir())
            .await
            .map_err(io(&config.tmp_dir()))?;
        if !config.data_dir().join("mysql").exists() {
            install_data_dir(&config).await?;
        }
        let command = config.command_line()?;
        let child = Command::new(command.program)
            .args(command.args)
            .env_clear()
            .envs(command.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ServerError::Spawn {
                program: "mariadbd",
                source,
            })?;
        let mut server = Self {
            config,
            child: Some(child),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), ServerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("not tried yet");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(ServerError::DiedOnStart {
                    dir: self.config.dir.clone(),
                    status,
                    log: tail_of(&self.config.error_log(), 4000),
                });
            }
            if self.config.socket().exists() {
                match self.root_pool_conn().await {
                    Ok(mut conn) => match conn.query_drop("SELECT 1").await {
                        Ok(()) => {
                            let _ = conn.disconnect().await;
                            return Ok(());
                        }
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(ServerError::StartTimeout {
                    dir: self.config.dir.clone(),
                    secs: START_TIMEOUT.as_secs(),
                    last,
                });
            }
            // Polling the socket is the only readiness signal mariadbd gives
            // without systemd's notify protocol.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn root_pool_conn(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        let connect = mysql_async::Conn::new(self.root_opts());
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(result) => result,
            Err(_) => Err(mysql_async::Error::Other("connect timed out".into())),
        }
    }

    /// Connection options for `root` over the server's unix socket.
    pub fn root_opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .user(Some("root"))
            .socket(Some(self.config.socket().display().to_string()))
            .prefer_socket(true)
            .into()
    }

    /// A new connection as `root` over the socket.
    pub async fn root_conn(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        self.root_pool_conn().await
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Shut down cleanly (SIGTERM), killing the server if it takes longer
    /// than the stop timeout.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            // mariadbd shuts down cleanly on SIGTERM.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => {
                let _ = child.kill().await;
                Ok(())
            }
        }
    }

    /// SIGKILL the server and reap it (a crash, for tests).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Wait until the process exits on its own (e.g. after a shutdown
    /// requested over SQL); `None` if it was already reaped.
    pub async fn wait(&mut self) -> Option<std::process::ExitStatus> {
        match self.child.as_mut() {
            Some(child) => child.wait().await.ok(),
            None => None,
        }
    }
}

async fn install_data_dir(config: &ServerConfig) -> Result<(), ServerError> {
    let program = find_program(&["/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db"])?;
    let output = tokio::time::timeout(
        START_TIMEOUT,
        Command::new(program)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", config.data_dir().display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg("--user=root")
            .env("TMPDIR", config.tmp_dir())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| ServerError::StartTimeout {
        dir: config.dir.clone(),
        secs: START_TIMEOUT.as_secs(),
        last: "mariadb-install-db did not finish".into(),
    })?
    .map_err(|source| ServerError::Spawn { program, source })?;
    if !output.status.success() {
        return Err(ServerError::Install {
            dir: config.data_dir(),
            status: output.status,
            output: String::from_utf8_lossy(&output.stderr).into_owned()
                + &String::from_utf8_lossy(&output.stdout),
        });
    }
    Ok(())
}
