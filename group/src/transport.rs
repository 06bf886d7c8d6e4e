//! Node-to-node RPCs over tonic gRPC: the client side openraft uses to
//! reach peers, and the server side that admits requests and hands them to
//! the local Raft.
//!
//! Consensus messages travel as postcard-encoded openraft types inside the
//! `RaftRequest`/`RaftResponse` envelopes of `proto`; nothing outside this
//! crate sees them. Every request carries [`ClusterCredentials`] and is
//! refused before it reaches Raft if they do not match.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use openraft::OptionalSend;
use openraft::errors::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::SnapshotOf;
use proto::v1::raft_client::RaftClient;
use proto::v1::{ClusterCredentials, RaftRequest, RaftResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

use crate::config::TlsFiles;
use crate::types::{MemberNode, SnapshotMeta, TypeConfig, Vote};

/// The credentials this member presents; the UUID is filled in once known.
#[derive(Debug)]
pub struct Credentials {
    pub cluster_name: String,
    pub proof: Vec<u8>,
    pub node_id: u64,
    pub uuid: Mutex<Option<[u8; 16]>>,
}

impl Credentials {
    pub fn to_proto(&self) -> ClusterCredentials {
        ClusterCredentials {
            cluster_name: self.cluster_name.clone(),
            cluster_uuid: self
                .uuid
                .lock()
                .expect("uuid lock")
                .map(|u| u.to_vec())
                .unwrap_or_default(),
            secret_proof: self.proof.clone(),
            node_id: self.node_id,
        }
    }
}

/// How members reach each other: plain TCP, or mutual TLS with
/// certificates signed by the cluster's CA. Cheap to clone.
#[derive(Clone, Default)]
pub struct Security {
    tls: Option<Arc<LoadedTls>>,
    /// Outgoing connections leave from this address (the member's own
    /// listen address), so that a member is one host on the network —
    /// which firewall rules and partitions rely on.
    local: Option<std::net::IpAddr>,
}

struct LoadedTls {
    ca: Certificate,
    identity: Identity,
}

impl Security {
    /// Read the PEM files; a missing or unreadable file is an error that
    /// names it (the member does not start half-secured).
    pub fn load(files: Option<&TlsFiles>) -> Result<Self, String> {
        let Some(files) = files else {
            return Ok(Self::default());
        };
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).map_err(|e| format!("TLS {what} file {}: {e}", path.display()))
        };
        let ca = read(&files.ca, "CA")?;
        let cert = read(&files.cert, "certificate")?;
        let key = read(&files.key, "key")?;
        for (bytes, what, path) in [
            (&ca, "CERTIFICATE", &files.ca),
            (&cert, "CERTIFICATE", &files.cert),
            (&key, "PRIVATE KEY", &files.key),
        ] {
            if !String::from_utf8_lossy(bytes).contains(&format!("{what}-----")) {
                return Err(format!(
                    "TLS file {} holds no PEM {}",
                    path.display(),
                    what.to_lowercase()
                ));
            }
        }
        let security = Self {
            tls: Some(Arc::new(LoadedTls {
                ca: Certificate::from_pem(ca),
                identity: Identity::from_pem(cert, key),
            })),
            local: None,
        };
        // Parse now, so that bad files stop the member at start.
        if let Some(server) = security.server_tls() {
            tonic::transport::Server::builder()
                .tls_config(server)
                .map_err(|e| {
                    format!(
                        "TLS files {}, {}: {e}",
                        files.cert.display(),
                        files.key.display()
                    )
                })?;
        }
        Ok(security)
    }

    /// Connect from `listen`'s address (unless it is the wildcard).
    pub fn bound_to(mut self, listen: std::net::SocketAddr) -> Self {
        self.local = Some(listen.ip()).filter(|ip| !ip.is_unspecified());
        self
    }

    /// A lazily connected channel to `address` (`host:port`) with the given
    /// timeouts; with TLS, the peer must present a certificate for `host`
    /// signed by the cluster CA.
    pub fn channel(&self, address: &str, timeout: Duration) -> Result<Channel, String> {
        let bad = |e: tonic::transport::Error| format!("cannot reach {address}: {e}");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(bad)?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .local_address(self.local);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(tls.ca.clone())
                        .identity(tls.identity.clone())
                        .timeout(timeout),
                )
                .map_err(bad)?;
        }
        Ok(endpoint.connect_lazy())
    }

    /// The server side: present our certificate, require a client
    /// certificate signed by the cluster CA.
    pub fn server_tls(&self) -> Option<ServerTlsConfig> {
        self.tls.as_ref().map(|tls| {
            ServerTlsConfig::new()
                .identity(tls.identity.clone())
                .client_ca_root(tls.ca.clone())
        })
    }
}

/// Makes a [`PeerClient`] for each peer openraft talks to.
pub struct PeerNetworkFactory {
    pub credentials: Arc<Credentials>,
    pub timeout: Duration,
    pub security: Security,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &MemberNode) -> PeerClient {
        PeerClient {
            target,
            address: node.address.clone(),
            credentials: self.credentials.clone(),
            timeout: self.timeout,
            security: self.security.clone(),
            client: None,
        }
    }
}

/// One peer, as openraft sees it.
pub struct PeerClient {
    target: u64,
    address: String,
    credentials: Arc<Credentials>,
    timeout: Duration,
    security: Security,
    client: Option<RaftClient<Channel>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, TransportError> {
    postcard::to_stdvec(value).map_err(|e| TransportError(format!("encoding: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TransportError> {
    postcard::from_bytes(bytes).map_err(|e| TransportError(format!("decoding: {e}")))
}

/// Which RPC of the `Raft` service to call.
#[derive(Clone, Copy)]
enum Rpc {
    Vote,
    AppendEntries,
    InstallSnapshot,
    TransferLeader,
}

impl PeerClient {
    fn client(&mut self) -> Result<RaftClient<Channel>, TransportError> {
        if self.client.is_none() {
            let channel = self
                .security
                .channel(&self.address, self.timeout)
                .map_err(TransportError)?;
            self.client = Some(RaftClient::new(channel));
        }
        Ok(self.client.clone().expect("just set"))
    }

    /// Send one consensus message; the reply is the remote
    /// `Result<Resp, Err>`, which a remote fatal error turns into
    /// "unreachable" (a stopping peer is as good as gone).
    async fn call<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::fmt::Display,
    >(
        &mut self,
        rpc: Rpc,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let unreachable = |e: TransportError| RPCError::Unreachable(Unreachable::new(&e));
        let payload = encode(request).map_err(unreachable)?;
        let mut client = self.client().map_err(unreachable)?;
        let request = RaftRequest {
            credentials: Some(self.credentials.to_proto()),
            payload,
        };
        let call = async {
            match rpc {
                Rpc::Vote => client.vote(request).await,
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
                Rpc::TransferLeader => client.transfer_leader(request).await,
            }
        };
        let response = match tokio::time::timeout(ttl, call).await {
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&TransportError(
                    format!("no answer from node {} within {ttl:?}", self.target),
                ))));
            }
            Ok(Err(status)) => {
                return Err(unreachable(TransportError(format!(
                    "node {} at {}: {}",
                    self.target,
                    self.address,
                    status.message()
                ))));
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        let result: Result<Resp, E> = decode(&response.payload).map_err(unreachable)?;
        result.map_err(|e| unreachable(TransportError(format!("node {}: {e}", self.target))))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = ();

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<_, _, RaftError<TypeConfig>>(Rpc::AppendEntries, &rpc, option.soft_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<_, _, RaftError<TypeConfig>>(Rpc::Vote, &rpc, option.soft_ttl())
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let result: Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> = self
            .call::<_, _, openraft::errors::Fatal<TypeConfig>>(
                Rpc::TransferLeader,
                &req,
                option.soft_ttl(),
            )
            .await;
        result
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, ()>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request: (Vote, SnapshotMeta) = (vote, snapshot.meta);
        self.call::<_, _, openraft::errors::Fatal<TypeConfig>>(
            Rpc::InstallSnapshot,
            &request,
            option.hard_ttl(),
        )
        .await
        .map_err(StreamingError::from)
    }
}

/// Until when the leader has confirmed that it holds a quorum (for a
/// follower's primary status). A follower does not count itself primary just
/// because a leader talks to it: that leader may itself be cut off from the
/// majority. It asks the leader for its lease instead (see `member`).
#[derive(Debug, Default)]
pub struct LeaderLease(Mutex<Option<Instant>>);

impl LeaderLease {
    pub fn new() -> Self {
        Self::default()
    }

    /// The leader confirmed a quorum valid until `until`.
    pub fn extend(&self, until: Instant) {
        let mut lease = self.0.lock().expect("lease lock");
        if lease.is_none_or(|current| current < until) {
            *lease = Some(until);
        }
    }

    pub fn until(&self) -> Option<Instant> {
        *self.0.lock().expect("lease lock")
    }
}

pub(crate) fn encode_reply<T: Serialize>(
    value: &T,
) -> Result<tonic::Response<RaftResponse>, tonic::Status> {
    encode(value)
        .map(|payload| tonic::Response::new(RaftResponse { payload }))
        .map_err(|e| tonic::Status::internal(e.0))
}

pub(crate) fn decode_request<T: DeserializeOwned>(payload: &[u8]) -> Result<T, tonic::Status> {
    decode(payload).map_err(|e| {
        tonic::Status::invalid_argument(format!("malformed consensus message: {}", e.0))
    })
}
