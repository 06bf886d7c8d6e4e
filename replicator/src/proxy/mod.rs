//! The MySQL proxy: clients connect here with any MySQL/MariaDB client;
//! each client gets its own connection to the local MariaDB, authenticated
//! by the server itself (pass-through), and its statements are relayed.
//!
//! - [`packet`] — wire framing (4-byte headers, continuation, size limit).
//! - [`wire`] — flags, length-encoded integers, OK / ERR / EOF packets.
//! - [`handshake`] — relaying the greeting and authentication.
//! - [`response`] — the response state machine (when a response ends).
//! - [`session`] — one session's two connections and relaying.
//! - [`classify`] — lexer-level statement classification and splitting.
//! - [`completion`] — how COMMIT / ROLLBACK end (CHAIN, RELEASE,
//!   `completion_type`).
//! - [`prepared`] — statement classes of prepared statements.
//! - [`status`] — `SHOW STATUS LIKE 'wsrep%'` answered with the node's state.
//! - [`shutdown`] — the stop phase sessions follow, and the session count.
//! - [`transaction`] — transactions as XA, ended through the cluster's
//!   [`transaction::CommitService`].
//!
//! Knows nothing of Raft or of the cluster.

pub mod classify;
pub mod completion;
pub mod handshake;
pub mod packet;
pub mod prepared;
pub mod response;
pub mod session;
pub mod shutdown;
pub mod status;
pub mod transaction;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixStream};

use session::{BoxRead, BoxWrite, Wire};
use shutdown::{Shutdown, StopPhase};
use transaction::{CommitService, SessionError, Transactions};

/// Where the local MariaDB listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Unix(PathBuf),
    Tcp(String),
}

impl Backend {
    /// Open a connection, within `timeout`.
    pub async fn connect(&self, timeout: Duration) -> std::io::Result<(BoxRead, BoxWrite)> {
        let connect = async {
            Ok::<_, std::io::Error>(match self {
                Backend::Unix(path) => {
                    let (r, w) = UnixStream::connect(path).await?.into_split();
                    (Box::new(r) as BoxRead, Box::new(w) as BoxWrite)
                }
                Backend::Tcp(address) => {
                    let stream = TcpStream::connect(address).await?;
                    stream.set_nodelay(true)?;
                    let (r, w) = stream.into_split();
                    (Box::new(r) as BoxRead, Box::new(w) as BoxWrite)
                }
            })
        };
        tokio::time::timeout(timeout, connect).await.map_err(|_| {
            std::io::Error::other(format!("no answer from MariaDB within {timeout:?}"))
        })?
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Unix(p) => write!(f, "unix:{}", p.display()),
            Backend::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// Settings of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub backend: Backend,
    /// Largest packet accepted from either side.
    pub max_packet: usize,
    pub connect_timeout: Duration,
}

/// Accept clients on `listener` until the task is dropped; their
/// transactions end through `service`; each session follows `shutdown`'s
/// stop phase and is counted there.
pub async fn serve(
    listener: TcpListener,
    config: ProxyConfig,
    service: Arc<dyn CommitService>,
    shutdown: Shutdown,
) {
    let config = Arc::new(config);
    let ids = AtomicU64::new(1);
    let mut phase = shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Stopping: no new clients (the listener closes on return).
            _ = phase.wait_for(|p| *p != StopPhase::Running) => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a client failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let config = config.clone();
        let service = service.clone();
        let shutdown = shutdown.clone();
        let guard = shutdown.enter();
        tokio::spawn(async move {
            let _counted = guard;
            match client_session(stream, peer, &config, service.as_ref(), &shutdown).await {
                Ok(()) => tracing::debug!(session = id, %peer, "client disconnected"),
                Err(e) => tracing::info!(session = id, %peer, error = %e, "client session ended"),
            }
        });
    }
}

async fn client_session(
    stream: TcpStream,
    peer: SocketAddr,
    config: &ProxyConfig,
    service: &dyn CommitService,
    shutdown: &Shutdown,
) -> Result<(), SessionError> {
    let (r, w) = stream.into_split();
    let client = (Box::new(r) as BoxRead, Box::new(w) as BoxWrite);
    let server = match config.backend.connect(config.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, backend = %config.backend, error = %e, "cannot reach the local MariaDB");
            return Err(SessionError::Protocol(e.into()));
        }
    };
    let handshake = Wire::open(client, server, config.max_packet);
    let mut wire = tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| {
            SessionError::Protocol(packet::ProtocolError::Malformed(format!(
                "no complete handshake within {:?}",
                config.connect_timeout
            )))
        })??;
    Transactions::new(service).serve(&mut wire, shutdown).await
}
