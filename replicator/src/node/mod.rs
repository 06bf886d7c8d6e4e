//! A running node: checks the local MariaDB, opens the ordered log,
//! catches up and resolves what a crash left prepared, then serves clients
//! through the proxy until it is told to stop or something fatal happens.
//!
//! - [`checks`] — start-up checks of the server's settings and privileges.
//! - [`order`] — the commit order (pure).
//! - [`seen`] — which transactions the log already decided (pure).
//! - [`pipeline`] — the commit pipeline and the proxy's commit service.

pub mod auto_increment;
pub mod checks;
pub mod order;
pub mod pipeline;
pub mod prepared;
pub mod seen;
pub mod sync_state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use group::{GroupConfig, GroupError, GroupMember};

use crate::apply::Applier;
use crate::capture::{Capture, CaptureConfig};
use crate::config::RunConfig;
use crate::proxy::shutdown::{Shutdown, StopPhase};
use crate::proxy::transaction::CommitService;
use crate::proxy::{Backend, ProxyConfig};
use auto_increment::AutoIncrement;
use pipeline::{Committer, Fatal, Pipeline, PipelineConfig, read_position};

/// The least time given to waits that do not depend on the commit path's
/// latency (the local binlog, the start-up read of the cluster position),
/// whatever `commit_timeout` is.
const LOCAL_WAIT: Duration = Duration::from_secs(10);

/// Why a node stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    NotReady(#[from] checks::NotReady),
    #[error("{0}")]
    Start(String),
    #[error("stopping: {0}")]
    Fatal(#[from] Fatal),
}

fn start_err(what: &str) -> impl FnOnce(String) -> NodeError + '_ {
    move |e| NodeError::Start(format!("{what}: {e}"))
}

/// Connection options of the replicator's own account.
pub fn admin_opts(config: &RunConfig) -> mysql_async::Opts {
    let builder = mysql_async::OptsBuilder::default()
        .user(Some(config.user.clone()))
        .pass(config.password.clone());
    let builder = match &config.backend {
        Backend::Unix(path) => builder
            .socket(Some(path.display().to_string()))
            .prefer_socket(true),
        Backend::Tcp(address) => {
            let (host, port) = address.rsplit_once(':').unwrap_or((address, "3306"));
            builder
                .ip_or_hostname(host.to_string())
                .tcp_port(port.parse().unwrap_or(3306))
                .prefer_socket(false)
        }
    };
    builder.into()
}

/// Where clients reach this node, as shown to the other members: the
/// client listen address, or — when that is a wildcard — the host the
/// group address is advertised on, with the client port.
fn client_address(config: &RunConfig) -> String {
    if !config.listen.ip().is_unspecified() {
        return config.listen.to_string();
    }
    let group = config
        .advertise
        .clone()
        .unwrap_or_else(|| config.group_listen.to_string());
    let host = group.rsplit_once(':').map_or(group.as_str(), |(h, _)| h);
    format!("{host}:{}", config.listen.port())
}

/// Run a node until `shutdown` completes (Ok) or a fatal condition stops
/// it (Err). `ready` is called once clients can connect.
pub async fn run(
    config: RunConfig,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), NodeError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| start_err("data directory")(e.to_string()))?;
    let admin = mysql_async::Pool::new(admin_opts(&config));
    let facts = checks::check_server(&admin).await?;
    checks::ensure_own_schema(&admin)
        .await
        .map_err(|e| start_err("creating the replicator schema")(e.to_string()))?;

    let applier = Applier::new(admin_opts(&config), config.apply_threads);
    let applied = applier
        .applied_position()
        .await
        .map_err(|e| start_err("reading the applied position")(e.to_string()))?;
    let position_file = config.data_dir.join("position");
    let position = read_position(&position_file)?;
    let mut group = GroupConfig::new(
        &config.cluster_name,
        &config.secret,
        config.group_listen,
        config.data_dir.join("group"),
    );
    group.advertise = config.advertise.clone();
    group.client_address = client_address(&config);
    config.group.apply(&mut group);
    let (member, log) =
        GroupMember::start(group, position.saturating_sub(config.certification_window))
            .await
            .map_err(|e| start_err("ordered log")(e.to_string()))?;
    enter_cluster(&member, &config).await?;
    let node_id = member.node_id();
    let capture = Capture::start(
        admin_opts(&config),
        CaptureConfig {
            server_id: config
                .capture_server_id
                .unwrap_or(4_000_000_000 + (node_id % 100_000_000) as u32),
            allow_tables_without_pk: config.allow_tables_without_pk,
            max_writeset_bytes: config.max_writeset_bytes,
            own_schema: "replicator".into(),
            // Waits for the local binlog, not for the cluster.
            timeout: config.commit_timeout.max(LOCAL_WAIT),
        },
    )
    .await
    .map_err(|e| start_err("binlog capture")(e.to_string()))?;
    let pipeline = Pipeline::new(
        PipelineConfig {
            node_id,
            window: config.certification_window,
            commit_timeout: config.commit_timeout,
            max_writeset_bytes: config.max_writeset_bytes,
            position_file,
            apply_threads: config.apply_threads,
        },
        member.clone(),
        capture.clone(),
        admin.clone(),
        applier.clone(),
        position,
        applied,
    );
    tokio::spawn(pipeline.clone().run_appliers());
    let mut delivery = tokio::spawn(pipeline.clone().run(log, position));
    tokio::spawn(pipeline.clone().keep_position(Duration::from_secs(1)));
    let tracking = tokio::spawn(pipeline.clone().track_sync(Duration::from_millis(100)));
    let liveness = tokio::spawn(pipeline.clone().watch_local_server(Duration::from_secs(1)));

    // Catch up with the cluster, then settle what a crash left prepared,
    // before any client is served.
    let recovered = async {
        let mut primary = member.primary();
        let _ = primary.wait_for(|p| p.is_primary()).await;
        let read = tokio::time::timeout(config.commit_timeout.max(LOCAL_WAIT), member.read_index())
            .await
            .map_err(|_| NodeError::Start("reading the cluster's position timed out".into()))?
            .map_err(|e| NodeError::Start(format!("reading the cluster's position: {e}")))?;
        if !pipeline
            .wait_processed(read, Duration::from_secs(3600))
            .await
        {
            return Err(NodeError::Start("could not catch up with the log".into()));
        }
        let abandoned = pipeline.abandon_undecided().await?;
        Ok::<_, NodeError>(abandoned)
    };
    let abandoned = tokio::select! {
        r = recovered => r?,
        r = &mut delivery => return Err(flatten(r)),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| start_err("client port")(format!("{}: {e}", config.listen)))?;
    let listen = listener.local_addr().unwrap_or(config.listen);
    let auto_increment = AutoIncrement::default();
    let spacing = config.auto_increment_control.then(|| {
        tokio::spawn(auto_increment.clone().keep(
            member.clone(),
            admin.clone(),
            Duration::from_millis(500),
        ))
    });
    let sessions = Shutdown::default();
    let service: Arc<dyn CommitService> = Arc::new(Committer::new(
        pipeline.clone(),
        auto_increment,
        sessions.clone(),
    ));
    let http = match config.http_listen {
        Some(address) => {
            let http_listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| start_err("HTTP port")(format!("{address}: {e}")))?;
            Some(tokio::spawn(crate::http::serve(
                http_listener,
                service.clone(),
            )))
        }
        None => None,
    };
    let proxy = tokio::spawn(crate::proxy::serve(
        listener,
        ProxyConfig {
            backend: config.backend.clone(),
            max_packet: 1 << 30,
            connect_timeout: Duration::from_secs(10),
        },
        service,
        sessions.clone(),
    ));
    tracing::info!(
        node = node_id,
        %listen,
        server = %facts.version,
        position,
        abandoned,
        "replicator ready"
    );
    ready(listen);
    let failed = tokio::select! {
        _ = shutdown => None,
        r = &mut delivery => Some(flatten(r)),
        fatal = pipeline.stopped() => Some(NodeError::Fatal(fatal)),
    };
    let result = match failed {
        Some(e) => Err(e),
        // Asked to stop: drain the sessions and leave the voters, while
        // the pipeline goes on committing what they finish.
        None => tokio::select! {
            () = stop_gracefully(&sessions, &proxy, &member, &config) => Ok(()),
            r = &mut delivery => Err(flatten(r)),
            fatal = pipeline.stopped() => Err(NodeError::Fatal(fatal)),
        },
    };
    proxy.abort();
    tracking.abort();
    liveness.abort();
    if let Some(spacing) = spacing {
        spacing.abort();
    }
    if let Some(http) = http {
        http.abort();
    }
    // Each step is bounded: after a fatal stop, an applier may still hold
    // a connection while it waits for a commit turn that never comes, and
    // a pool's disconnect waits for every connection to come back.
    bounded("binlog capture", capture.shutdown()).await;
    bounded("ordered log", member.shutdown()).await;
    bounded("replicator connections", async {
        admin.disconnect().await.ok();
    })
    .await;
    bounded("applier connections", applier.disconnect()).await;
    result
}

/// How long each step of stopping may take before it is abandoned (the
/// process exits anyway; the server rolls back what its connections held).
const STOP_STEP_TIMEOUT: Duration = Duration::from_secs(5);

async fn bounded(what: &str, step: impl Future<Output = ()>) {
    if tokio::time::timeout(STOP_STEP_TIMEOUT, step).await.is_err() {
        tracing::warn!(
            step = what,
            "a stop step did not finish in time; abandoning it"
        );
    }
}

/// How long leaving the voters may take at a graceful stop.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A graceful stop: take no new clients, let open transactions finish for
/// the grace period, close what is left (those transactions roll back),
/// then leave the voting membership so the remaining nodes keep their
/// quorum without this one. The last data voter stays a member: the
/// cluster resumes from it when it comes back.
async fn stop_gracefully(
    sessions: &Shutdown,
    proxy: &tokio::task::JoinHandle<()>,
    member: &GroupMember,
    config: &RunConfig,
) {
    let node = member.node_id();
    // The accept loop returns on its own when the phase moves on.
    sessions.advance(StopPhase::Draining);
    proxy.abort();
    tracing::info!(
        node,
        sessions = sessions.sessions(),
        grace_ms = config.stop_grace.as_millis() as u64,
        "stopping: no new clients; open transactions may finish"
    );
    let left = sessions.wait_sessions_ended(config.stop_grace).await;
    sessions.advance(StopPhase::Closing);
    if left > 0 {
        tracing::info!(
            node,
            sessions = left,
            "grace period over: closing sessions; their open transactions roll back"
        );
        let running = sessions.wait_sessions_ended(config.commit_timeout).await;
        if running > 0 {
            tracing::warn!(
                node,
                sessions = running,
                "sessions still running a statement are cut off"
            );
        }
    }
    if member.other_data_voters() == 0 {
        tracing::info!(
            node,
            "the last data voter stays a member: the cluster resumes from it"
        );
        return;
    }
    if member.step_down(LEAVE_TIMEOUT).await {
        tracing::info!(node, "handed leadership over before leaving");
    }
    match member.leave(LEAVE_TIMEOUT).await {
        Ok(()) => tracing::info!(node, "left the voters; the others keep their quorum"),
        Err(e) => tracing::warn!(
            node,
            error = %e,
            "could not leave the voters; stopping anyway (the others see a crash)"
        ),
    }
}

/// How long a node keeps asking to join before it gives up: every other
/// member may be restarting too (a full-cluster restart after graceful
/// stops), so it waits for them rather than failing at once.
const JOIN_PATIENCE: Duration = Duration::from_secs(600);

/// Make `member` part of its cluster if it is not yet: bootstrap a new
/// cluster, join one, or — for a node that left gracefully — join its
/// cluster again through the members it remembers (never bootstrap: its
/// data belongs to that cluster).
async fn enter_cluster(member: &GroupMember, config: &RunConfig) -> Result<(), NodeError> {
    if member.is_member() {
        return Ok(());
    }
    if member.has_left() {
        let mut seeds = config.join.clone();
        for peer in member.peer_addresses().await {
            if !seeds.contains(&peer) {
                seeds.push(peer);
            }
        }
        tracing::info!(
            node = member.node_id(),
            seeds = %seeds.join(","),
            "this node left its cluster gracefully; joining it again"
        );
        return join_with_retries(member, &seeds).await;
    }
    if config.bootstrap {
        member
            .bootstrap()
            .await
            .map_err(|e| start_err("bootstrap")(e.to_string()))
    } else if !config.join.is_empty() {
        join_with_retries(member, &config.join).await
    } else {
        Err(NodeError::Start(
            "this data directory belongs to no cluster: start the first node with \
             --bootstrap, the others with --join HOST:PORT"
                .into(),
        ))
    }
}

/// Ask `seeds` to admit `member` until one answers (each attempt is bounded
/// by the group's RPC timeout), for up to [`JOIN_PATIENCE`]. A refusal
/// (wrong cluster, wrong secret) ends it at once.
async fn join_with_retries(member: &GroupMember, seeds: &[String]) -> Result<(), NodeError> {
    if seeds.is_empty() {
        return Err(NodeError::Start(
            "no member to join: give one with --join HOST:PORT".into(),
        ));
    }
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let mut delay = Duration::from_millis(200);
    loop {
        match member.join(seeds).await {
            Ok(()) => return Ok(()),
            Err(GroupError::Refused(reason)) => return Err(start_err("join")(reason)),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(
                    node = member.node_id(),
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "no member admitted this node yet; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(start_err("join")(e.to_string())),
        }
    }
}

fn flatten(r: Result<Result<(), Fatal>, tokio::task::JoinError>) -> NodeError {
    match r {
        Ok(Ok(())) => NodeError::Fatal(Fatal("the commit pipeline stopped".into())),
        Ok(Err(f)) => NodeError::Fatal(f),
        Err(e) => NodeError::Fatal(Fatal(format!("the commit pipeline panicked: {e}"))),
    }
}
