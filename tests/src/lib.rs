//! End-to-end test harness: real MariaDB servers and, as they exist, real
//! replicator and arbitrator binaries, each on a private port and directory.
//!
//! # Layout
//!
//! - [`ports`] — hands out loopback TCP ports that are free and reserved
//!   across the test processes of one run.
//! - [`TestServer`] — a MariaDB server in its own temporary directory,
//!   removed when the test ends.
//! - `tests/*.rs` — the end-to-end tests themselves.
//! - `src/bin/log-writer.rs` — appends to a log store until killed, for
//!   the log-store crash test.
//! - `src/bin/gen-collation-tables.rs` — regenerates the collation weight
//!   tables the key encoder uses, from a real server.

pub mod group_node;
pub mod haproxy;
pub mod http;
pub mod partition;
pub mod replication_cluster;
pub mod sidecar;

use std::ops::{Deref, DerefMut};

use replicator::mariadb_server::{MariadbServer, ServerConfig, ServerError};

pub mod ports {
    //! Free TCP ports on loopback for test servers.
    //!
    //! Ports come from below the kernel's ephemeral range (32768 and up on
    //! Linux), so an outgoing connection of one test can never take the
    //! listening port another test is about to bind. Each port handed out
    //! is reserved across processes (nextest runs one process per test) by
    //! a file named after it holding the owner's pid; a reservation whose
    //! owner is gone is taken over. A port is probed by binding the
    //! wildcard address, which fails if any loopback address has it.

    use std::fs;
    use std::io::Write;
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU16, Ordering};

    const BASE: u16 = 12_000;
    const SPAN: u16 = 20_000;

    static NEXT: AtomicU16 = AtomicU16::new(0);

    fn reservations() -> PathBuf {
        let dir = std::env::temp_dir().join("e2e-port-reservations");
        fs::create_dir_all(&dir).expect("port reservation directory");
        dir
    }

    fn owner_alive(path: &std::path::Path) -> bool {
        match fs::read_to_string(path) {
            Ok(pid) => std::path::Path::new("/proc").join(pid.trim()).exists(),
            Err(_) => false,
        }
    }

    /// Claims `port` for this process: the reservation file appears
    /// atomically with the owner's pid already in it (a hard link of a
    /// private file), so a reader never sees a half-written one.
    fn reserve(port: u16) -> bool {
        let dir = reservations();
        let path = dir.join(port.to_string());
        let draft = dir.join(format!(".{}-{port}", std::process::id()));
        {
            let mut file = fs::File::create(&draft).expect("port reservation draft");
            write!(file, "{}", std::process::id()).expect("port reservation draft");
        }
        let mut claimed = false;
        for _ in 0..2 {
            match fs::hard_link(&draft, &path) {
                Ok(()) => {
                    claimed = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if owner_alive(&path) {
                        break;
                    }
                    let _ = fs::remove_file(&path);
                }
                Err(e) => panic!("port reservation {}: {e}", path.display()),
            }
        }
        let _ = fs::remove_file(&draft);
        claimed
    }

    /// A port free on every loopback address, reserved for this process.
    pub fn free_port() -> u16 {
        // Spread processes with neighbouring pids far apart.
        let start = (std::process::id().wrapping_mul(2_654_435_761) % u32::from(SPAN)) as u16;
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            assert!(n < SPAN, "no free port left in {BASE}..{}", BASE + SPAN);
            let port = BASE + (start + n) % SPAN;
            if TcpListener::bind(("0.0.0.0", port)).is_ok() && reserve(port) {
                return port;
            }
        }
    }
}

/// Run `command` to completion within `timeout`; its standard output.
/// Panics (with its standard error) if it fails or takes longer.
pub async fn output_of(
    command: &mut tokio::process::Command,
    timeout: std::time::Duration,
) -> String {
    let out = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within {timeout:?}"))
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A MariaDB server in a temporary directory; killed and removed on drop.
pub struct TestServer {
    server: MariadbServer,
    // Dropped after `server` (field order), so the process dies first.
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Start a fresh server on a free loopback port.
    pub async fn start() -> Result<Self, ServerError> {
        let dir = tempfile::Builder::new()
            .prefix("repl-test-")
            .tempdir()
            .expect("temporary directory");
        let mut config = ServerConfig::new(dir.path(), ports::free_port());
        config.buffer_pool_size = "32M".into();
        let server = MariadbServer::start(config).await?;
        Ok(Self { server, _dir: dir })
    }
}

impl Deref for TestServer {
    type Target = MariadbServer;
    fn deref(&self) -> &MariadbServer {
        &self.server
    }
}

impl DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut MariadbServer {
        &mut self.server
    }
}

/// Path of one of the workspace's binaries (`replicator`, `garbd`), built
/// by `cargo build --workspace --bins` (the test command does this first).
/// `E2E_BIN_DIR` overrides the directory.
pub fn binary(name: &str) -> std::path::PathBuf {
    let dir = match std::env::var_os("E2E_BIN_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            // target/<profile>/deps/<test binary> → target/<profile>
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("test binary lives in target/<profile>/deps")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first (or set E2E_BIN_DIR)",
        path.display()
    );
    path
}

/// Wait until `check` returns `Some`, polling every 50 ms, or panic with
/// `what` after `timeout`. For conditions that have no notification (a file
/// appearing, a process exiting that is not our child).
pub async fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Contents of log entry `index` in the log-store crash test: deterministic
/// and varied in size, so a reader can verify any entry by its index.
pub fn log_payload(index: u64) -> Vec<u8> {
    let len = 50 + (index * 7919 % 3000) as usize;
    (0..len).map(|k| (index as usize + k) as u8).collect()
}
