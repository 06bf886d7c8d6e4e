//! A running member of the ordered log: the public API of this crate.
//!
//! Owns the Raft instance, the gRPC server, the member's identity and its
//! primary-component status. Everything a caller sees is in seqnos and
//! bytes (see [`crate::Committed`]); openraft stays inside.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Instant as _, ReadPolicy, ServerState};
use proto::v1::group_client::GroupClient;
use proto::v1::{JoinRequest, LeaveRequest, ReadIndexRequest, StatusRequest};
use tokio::sync::{mpsc, watch};

use crate::config::{GroupConfig, TlsFiles};
use crate::flow_control::FlowGate;
use crate::forwarder::Forwarder;
use crate::identity::{Admission, Identity, secret_proof};
use crate::log_store::LogStoreOptions;
use crate::service::Services;
use crate::state_machine::{CommitStream, Committed};
use crate::storage::RaftLog;
use crate::transport::{Credentials, LeaderLease, PeerNetworkFactory, Security};
use crate::types::{MemberNode, Proposal, TypeConfig};

pub(crate) type Raft = openraft::Raft<TypeConfig, CommitStream>;

/// Whether this member is in the primary component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Primary {
    Yes,
    /// Not primary, and why.
    No(String),
}

impl Primary {
    pub fn is_primary(&self) -> bool {
        *self == Primary::Yes
    }
}

/// Errors of the member API.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("not in the primary component: {0}")]
    NotPrimary(String),
    #[error("no leader answered within {0:?}")]
    Timeout(Duration),
    #[error(
        "the proposal may or may not have been committed (leader changed while it was in flight)"
    )]
    Indeterminate,
    #[error("proposals are held by flow control: members {0:?} are catching up")]
    FlowControl(Vec<u64>),
    #[error("this member has stopped: {0}")]
    Stopped(String),
    #[error("{0}")]
    Refused(String),
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("transport: {0}")]
    Transport(String),
}

/// One member's view of itself and the cluster.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub node_id: u64,
    pub primary: Primary,
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<u64>,
    pub committed: u64,
    pub applied: u64,
    pub last_log_index: u64,
    pub members: Vec<MemberInfo>,
    /// The cluster's UUID, once it has one.
    pub cluster_uuid: Option<[u8; 16]>,
    /// Index of the log entry that set the current membership: it changes
    /// with every membership change (Galera's configuration id).
    pub conf_id: u64,
    /// Members holding new proposals (flow control), as the leader last
    /// reported them.
    pub flow_control_paused_by: Vec<u64>,
    /// The membership is a single configuration (not a joint one in the
    /// middle of a change) and is committed. Until then a member that was
    /// just added may not count towards quorum yet: taking another member
    /// down before this is true can stall the group.
    pub membership_settled: bool,
}

/// A member as listed by [`GroupMember::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub node_id: u64,
    pub address: String,
    /// Where its clients connect; empty for an arbitrator.
    pub client_address: String,
    pub voter: bool,
    pub arbitrator: bool,
    /// Last log index known to be replicated there (leader's view only).
    pub matched: Option<u64>,
}

pub(crate) struct Inner {
    pub config: GroupConfig,
    pub raft: Raft,
    pub identity: std::sync::Mutex<Identity>,
    pub credentials: Arc<Credentials>,
    pub admission: Admission,
    pub lease: Arc<LeaderLease>,
    pub primary: watch::Sender<Primary>,
    /// Held while a membership change is driven by this member (Raft
    /// allows one change in flight).
    pub membership_changes: tokio::sync::Mutex<()>,
    /// One multiplexed HTTP/2 connection per peer address for the member
    /// API (forwarded proposals, reads, leave); tonic clients are cheap to
    /// clone and share it.
    pub peers:
        std::sync::Mutex<std::collections::HashMap<String, GroupClient<tonic::transport::Channel>>>,
    /// Batches proposals this member forwards to the leader.
    pub forwarder: std::sync::OnceLock<Forwarder>,
    /// When this member last started handing leadership away: quorum
    /// acknowledgements older than that no longer make it primary (the
    /// new leader may already be elected).
    pub transfer_started: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Plain TCP or mutual TLS to the other members.
    pub security: Security,
    /// The leader's table of members holding proposals.
    pub flow: FlowGate,
    /// Whether this member's consumer asked to hold proposals.
    pub pause_requested: watch::Sender<bool>,
    /// Who holds proposals, as the leader last said (a follower's view).
    pub cluster_paused_by: std::sync::Mutex<Vec<u64>>,
}

impl Inner {
    /// The member-API client for `address`, connected lazily and reused.
    pub fn group_client(
        &self,
        address: &str,
    ) -> Result<GroupClient<tonic::transport::Channel>, GroupError> {
        let mut peers = self.peers.lock().expect("peers lock");
        if let Some(client) = peers.get(address) {
            return Ok(client.clone());
        }
        let client = GroupClient::new(
            self.security
                .channel(address, self.config.rpc_timeout())
                .map_err(GroupError::Transport)?,
        );
        peers.insert(address.to_string(), client.clone());
        Ok(client)
    }
}

/// A running member. Cheap to clone.
#[derive(Clone)]
pub struct GroupMember {
    inner: Arc<Inner>,
    server: Arc<tokio::task::JoinHandle<()>>,
}

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

impl GroupMember {
    /// Open the member's state in `config.data_dir`, start its RPC server
    /// and its Raft instance. Committed entries after `deliver_after` are
    /// sent to the returned receiver in order. The member does nothing
    /// until it is bootstrapped, joins, or was already part of a cluster.
    pub async fn start(
        config: GroupConfig,
        deliver_after: u64,
    ) -> Result<(Self, mpsc::Receiver<Committed>), GroupError> {
        let identity = Identity::load_or_create(&config.data_dir, &config.cluster_name)?;
        let security = Security::load(config.tls.as_ref())
            .map_err(GroupError::Refused)?
            .bound_to(config.listen);
        let raft_config = Arc::new(
            config
                .raft_config()
                .map_err(|e| GroupError::Refused(format!("invalid group settings: {e}")))?,
        );
        let log = RaftLog::open(
            config.data_dir.join("raft"),
            LogStoreOptions {
                segment_bytes: config.segment_bytes,
            },
        )?;
        let (tx, rx) = mpsc::channel(4096);
        let sm = CommitStream::open(config.data_dir.join("raft").join("sm"), tx, deliver_after)?;
        let proof = secret_proof(&config.cluster_name, &config.secret);
        let credentials = Arc::new(Credentials {
            cluster_name: config.cluster_name.clone(),
            proof: proof.clone(),
            node_id: identity.node_id,
            uuid: std::sync::Mutex::new(identity.cluster_uuid),
        });
        let network = PeerNetworkFactory {
            credentials: credentials.clone(),
            timeout: config.rpc_timeout(),
            security: security.clone(),
        };
        let retained_log = log.clone();
        let raft = Raft::new(identity.node_id, raft_config, network, log, sm)
            .await
            .map_err(|e| GroupError::Stopped(e.to_string()))?;
        let (primary, _) = watch::channel(Primary::No("starting".into()));
        let inner = Arc::new(Inner {
            admission: Admission {
                cluster_name: config.cluster_name.clone(),
                proof,
            },
            flow: FlowGate::new(config.flow_control_lease()),
            config,
            raft,
            identity: std::sync::Mutex::new(identity),
            credentials,
            lease: Arc::new(LeaderLease::new()),
            primary,
            membership_changes: tokio::sync::Mutex::new(()),
            peers: std::sync::Mutex::new(std::collections::HashMap::new()),
            forwarder: std::sync::OnceLock::new(),
            transfer_started: std::sync::Mutex::new(None),
            security,
            pause_requested: watch::channel(false).0,
            cluster_paused_by: std::sync::Mutex::new(Vec::new()),
        });
        let _ = inner
            .forwarder
            .set(Forwarder::start(Arc::downgrade(&inner)));
        let listener = tokio::net::TcpListener::bind(inner.config.listen)
            .await
            .map_err(|e| {
                GroupError::Refused(format!("cannot listen on {}: {e}", inner.config.listen))
            })?;
        let server = tokio::spawn(Services::serve(inner.clone(), listener));
        tokio::spawn(watch_primary(Arc::downgrade(&inner)));
        tokio::spawn(probe_leader_lease(Arc::downgrade(&inner)));
        tokio::spawn(report_flow_control(Arc::downgrade(&inner)));
        tokio::spawn(crate::retention::enforce(
            Arc::downgrade(&inner),
            retained_log,
        ));
        tracing::info!(node = inner.credentials.node_id, listen = %inner.config.listen, "group member started");
        Ok((
            Self {
                inner,
                server: Arc::new(server),
            },
            rx,
        ))
    }

    pub fn node_id(&self) -> u64 {
        self.inner.credentials.node_id
    }

    /// Whether this member already belongs to a cluster (bootstrapped or
    /// joined in an earlier run).
    pub fn is_member(&self) -> bool {
        let identity = self.inner.identity.lock().expect("identity lock");
        identity.cluster_uuid.is_some() && !identity.left
    }

    /// Whether this member left its cluster gracefully (it has the
    /// cluster's UUID but is no voter any more): it must join again, never
    /// bootstrap a new cluster.
    pub fn has_left(&self) -> bool {
        let identity = self.inner.identity.lock().expect("identity lock");
        identity.cluster_uuid.is_some() && identity.left
    }

    /// Group addresses of the other members in the membership this member
    /// knows (data members and arbitrators): where to ask to join again.
    /// Waits (briefly) for Raft to have loaded that membership from disk.
    pub async fn peer_addresses(&self) -> Vec<String> {
        let me = self.node_id();
        let _ = self
            .inner
            .raft
            .wait(Some(Duration::from_secs(5)))
            .metrics(
                |m| m.membership_config.log_id().is_some(),
                "the stored membership is loaded",
            )
            .await;
        self.inner
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(_, node)| node.address.clone())
            .collect()
    }

    /// How many voters other than this member hold data (are not
    /// arbitrators), in the membership this member knows.
    pub fn other_data_voters(&self) -> usize {
        let me = self.node_id();
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .filter(|id| *id != me)
            .filter(|id| membership.get_node(id).is_some_and(|n| !n.arbitrator))
            .count()
    }

    /// Make this member the first of a new cluster (a new UUID).
    pub async fn bootstrap(&self) -> Result<(), GroupError> {
        if self.is_member() {
            return Err(GroupError::Refused(
                "this member already belongs to a cluster; bootstrap only a new data directory"
                    .into(),
            ));
        }
        let uuid: [u8; 16] = rand::random();
        let mut members = BTreeMap::new();
        members.insert(self.node_id(), self.node());
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|e| GroupError::Refused(format!("bootstrap: {e}")))?;
        // Only a cluster that exists gets its UUID recorded.
        self.set_uuid(uuid)?;
        tracing::info!(node = self.node_id(), uuid = %hex(&uuid), "bootstrapped a new cluster");
        Ok(())
    }

    fn node(&self) -> MemberNode {
        MemberNode {
            address: self.inner.config.advertise_address(),
            arbitrator: self.inner.config.arbitrator,
            client_address: self.inner.config.client_address.clone(),
        }
    }

    fn set_uuid(&self, uuid: [u8; 16]) -> Result<(), GroupError> {
        let mut identity = self.inner.identity.lock().expect("identity lock");
        if identity.cluster_uuid.is_some_and(|ours| ours != uuid) {
            return Err(GroupError::Refused(format!(
                "this data directory belongs to cluster {}, not {}",
                hex(&identity.cluster_uuid.unwrap_or_default()),
                hex(&uuid)
            )));
        }
        identity.cluster_uuid = Some(uuid);
        identity.left = false;
        identity.save(&self.inner.config.data_dir)?;
        *self.inner.credentials.uuid.lock().expect("uuid lock") = Some(uuid);
        Ok(())
    }

    /// Join the cluster that one of `seeds` (`host:port`) belongs to. The
    /// leader adds this member as a learner and promotes it to voter once
    /// it has caught up.
    pub async fn join(&self, seeds: &[String]) -> Result<(), GroupError> {
        let mut last = String::from("no seed given");
        for seed in seeds {
            let mut client = GroupClient::new(
                self.inner
                    .security
                    .channel(seed, self.inner.config.rpc_timeout())
                    .map_err(GroupError::Transport)?,
            );
            let request = JoinRequest {
                credentials: Some(self.inner.credentials.to_proto()),
                address: self.inner.config.advertise_address(),
                arbitrator: self.inner.config.arbitrator,
                client_address: self.inner.config.client_address.clone(),
            };
            match client.join(request).await {
                Ok(response) => {
                    let uuid: [u8; 16] =
                        response.into_inner().cluster_uuid.try_into().map_err(|_| {
                            GroupError::Refused(
                                "seed answered with a malformed cluster UUID".into(),
                            )
                        })?;
                    self.set_uuid(uuid)?;
                    tracing::info!(node = self.node_id(), seed = %seed, "joining");
                    return Ok(());
                }
                Err(status) if status.code() == tonic::Code::PermissionDenied => {
                    return Err(GroupError::Refused(status.message().to_string()));
                }
                Err(status) => last = format!("{seed}: {}", status.message()),
            }
        }
        Err(GroupError::Transport(last))
    }

    /// Flow control: ask the cluster to hold new proposals while `paused`
    /// (this member's apply queue is too long), and to go on once it is
    /// false again. The request is renewed every heartbeat while it stands
    /// and lapses on its own if this member dies.
    pub fn pause_proposals(&self, paused: bool) {
        self.inner.pause_requested.send_if_modified(|current| {
            let changed = *current != paused;
            *current = paused;
            changed
        });
    }

    /// The primary-component status, updated as it changes.
    pub fn primary(&self) -> watch::Receiver<Primary> {
        self.inner.primary.subscribe()
    }

    /// Append `data` to the log; returns its seqno once it is committed.
    /// Forwarded to the leader when this member is not the leader, retried
    /// across leader changes until `timeout`; a member outside the primary
    /// component waits for it until `timeout`, then refuses. A retry after a lost reply may
    /// append the same data twice: consumers must deduplicate.
    pub async fn propose(&self, data: Vec<u8>, timeout: Duration) -> Result<u64, GroupError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            // During a leader change the member is briefly not primary: wait
            // for the primary component to come back, until the deadline.
            let mut primary = self.inner.primary.subscribe();
            let wait = primary.wait_for(Primary::is_primary);
            if tokio::time::timeout_at(deadline.into(), wait)
                .await
                .is_err()
            {
                let reason = match &*self.inner.primary.borrow() {
                    Primary::No(reason) => reason.clone(),
                    Primary::Yes => "lost and regained during the wait".into(),
                };
                return Err(GroupError::NotPrimary(reason));
            }
            // A follower that knows the leader forwards straight away.
            if let Some(address) = self.known_leader_address() {
                match self.forward_propose(&address, data.clone(), deadline).await {
                    Ok(seqno) => return Ok(seqno),
                    Err(e) => {
                        tracing::debug!(leader = %address, error = %e, "forwarding a proposal failed; retrying")
                    }
                }
            }
            // A leader holds proposals while flow control asks it to.
            if let Err(holders) = self.inner.flow.wait_open(deadline.into()).await {
                return Err(GroupError::FlowControl(holders));
            }
            // A leader that lost its quorum never completes the write:
            // past the deadline its outcome is unknown (it may commit once
            // a quorum is back).
            let write = self.inner.raft.client_write(Proposal(data.clone()));
            let Ok(written) = tokio::time::timeout_at(deadline.into(), write).await else {
                return Err(GroupError::Indeterminate);
            };
            let leader_address = match written {
                Ok(response) => return Ok(response.log_id.index),
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                    return Err(GroupError::Indeterminate);
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f
                    .leader_node
                    .filter(|_| f.leader_id != Some(self.node_id()))
                    .map(|n| n.address),
                Err(RaftError::APIError(e)) => return Err(GroupError::Refused(e.to_string())),
                Err(RaftError::Fatal(e)) => return Err(GroupError::Stopped(e.to_string())),
            };
            if let Some(address) = leader_address {
                match self.forward_propose(&address, data.clone(), deadline).await {
                    Ok(seqno) => return Ok(seqno),
                    Err(e) => {
                        tracing::debug!(leader = %address, error = %e, "forwarding a proposal failed; retrying")
                    }
                }
            }
            if Instant::now() + backoff > deadline {
                return Err(GroupError::Timeout(timeout));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// The leader's address, if another member leads.
    fn known_leader_address(&self) -> Option<String> {
        other_leader_address(&self.inner.raft.metrics().borrow_watched())
    }

    async fn forward_propose(
        &self,
        address: &str,
        data: Vec<u8>,
        deadline: Instant,
    ) -> Result<u64, GroupError> {
        let forward = self
            .inner
            .forwarder
            .get()
            .expect("set at start")
            .forward(address.to_string(), data);
        // Bounded by the proposal's deadline; once sent, the outcome is
        // unknown.
        tokio::time::timeout_at(deadline.into(), forward)
            .await
            .unwrap_or(Err(GroupError::Indeterminate))
    }

    /// The seqno a linearizable reader must wait for: every entry committed
    /// before this call is at or below it.
    pub async fn read_index(&self) -> Result<u64, GroupError> {
        match self
            .inner
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
        {
            Ok(read) => Ok(read.index()),
            Err(RaftError::APIError(e)) => {
                let address = self
                    .known_leader_address()
                    .ok_or_else(|| GroupError::NotPrimary(e.to_string()))?;
                let mut client = self.inner.group_client(&address)?;
                let response = client
                    .read_index(ReadIndexRequest {
                        credentials: Some(self.inner.credentials.to_proto()),
                    })
                    .await
                    .map_err(|s| GroupError::Transport(s.message().to_string()))?;
                Ok(response.into_inner().seqno)
            }
            Err(RaftError::Fatal(e)) => Err(GroupError::Stopped(e.to_string())),
        }
    }

    /// This member's view of itself and the cluster.
    pub fn status(&self) -> MemberStatus {
        status_of(&self.inner)
    }

    /// Leave the cluster gracefully: this member is removed from the
    /// voters (by the leader) before it stops, so the rest keep quorum.
    pub async fn leave(&self, timeout: Duration) -> Result<(), GroupError> {
        let deadline = Instant::now() + timeout;
        let me = self.node_id();
        loop {
            // Another member leads: ask it directly (asking Raft here
            // would only be told to forward, and log that as an error).
            let leader = other_leader_address(&self.inner.raft.metrics().borrow_watched());
            let done = match leader {
                Some(address) => self.ask_leader_to_remove_me(&address).await?,
                None => match self
                    .inner
                    .raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([me])), false)
                    .await
                {
                    Ok(_) => true,
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                        match f.leader_node.filter(|_| f.leader_id != Some(me)) {
                            Some(node) => self.ask_leader_to_remove_me(&node.address).await?,
                            None => false,
                        }
                    }
                    // Done only if this member really is no voter any more;
                    // otherwise (a change in progress, an unknown outcome)
                    // try again until the deadline.
                    Err(RaftError::APIError(e)) => {
                        let gone = !self.is_voter();
                        tracing::debug!(node = me, reason = %e, gone, "leave: not removed by this attempt");
                        gone
                    }
                    Err(RaftError::Fatal(e)) => return Err(GroupError::Stopped(e.to_string())),
                },
            };
            if done {
                break;
            }
            if Instant::now() >= deadline {
                return Err(GroupError::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        {
            let mut identity = self.inner.identity.lock().expect("identity lock");
            identity.left = true;
            identity.save(&self.inner.config.data_dir)?;
        }
        tracing::info!(node = self.node_id(), "left the voting membership");
        Ok(())
    }

    /// Ask the leader at `address` to remove this member from the voters;
    /// whether it did.
    async fn ask_leader_to_remove_me(&self, address: &str) -> Result<bool, GroupError> {
        let mut client = self.inner.group_client(address)?;
        let request = LeaveRequest {
            credentials: Some(self.inner.credentials.to_proto()),
        };
        Ok(client.leave(request).await.is_ok())
    }

    /// Whether this member is a voter in the membership it knows.
    fn is_voter(&self) -> bool {
        is_voter(&self.inner, self.node_id())
    }

    /// Stop Raft and the RPC server.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
        self.server.abort();
    }

    /// If this member leads, hand leadership to a caught-up data voter and
    /// wait (at most `timeout`) until another member leads: a graceful
    /// stop does this first, so the group never waits out an election
    /// timeout for the leader that left. Whether another member leads.
    pub async fn step_down(&self, timeout: Duration) -> bool {
        if !hand_over_leadership(&self.inner).await {
            return false;
        }
        let me = self.node_id();
        self.inner
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "another member leads",
            )
            .await
            .is_ok()
    }

    /// Hand leadership to `node` (no-op unless this member leads).
    pub async fn transfer_leader(&self, node: u64) {
        *self.inner.transfer_started.lock().expect("transfer lock") =
            Some(tokio::time::Instant::now());
        if let Err(e) = self.inner.raft.trigger().transfer_leader(node).await {
            tracing::warn!(to = node, error = %e, "leadership transfer not started");
        }
    }

    /// Ask a running member at `address` for its status (the `--status`
    /// of the command-line tools).
    pub async fn remote_status(
        address: &str,
        cluster_name: &str,
        secret: &str,
        tls: Option<&TlsFiles>,
        timeout: Duration,
    ) -> Result<proto::v1::StatusResponse, GroupError> {
        let security = Security::load(tls).map_err(GroupError::Refused)?;
        let mut client = GroupClient::new(
            security
                .channel(address, timeout)
                .map_err(GroupError::Transport)?,
        );
        let credentials = proto::v1::ClusterCredentials {
            cluster_name: cluster_name.to_string(),
            cluster_uuid: Vec::new(),
            secret_proof: secret_proof(cluster_name, secret),
            node_id: 0,
        };
        client
            .status(StatusRequest {
                credentials: Some(credentials),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| match s.code() {
                tonic::Code::PermissionDenied => GroupError::Refused(s.message().to_string()),
                _ => GroupError::Transport(s.message().to_string()),
            })
    }
}

/// Whether `node` is a voter in the membership `inner` knows.
pub(crate) fn is_voter(inner: &Inner, node: u64) -> bool {
    inner
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .any(|id| id == node)
}

/// The address of the leader, when another member leads.
pub(crate) fn other_leader_address(m: &openraft::RaftMetrics<TypeConfig>) -> Option<String> {
    let leader = m.current_leader.filter(|l| *l != m.id)?;
    m.membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.address.clone())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn status_of(inner: &Inner) -> MemberStatus {
    let m = inner.raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| MemberInfo {
            node_id: *id,
            address: node.address.clone(),
            client_address: node.client_address.clone(),
            voter: voters.contains(id),
            arbitrator: node.arbitrator,
            matched: m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index)
                .or(if *id == m.id { m.last_log_index } else { None }),
        })
        .collect();
    MemberStatus {
        node_id: m.id,
        primary: inner.primary.borrow().clone(),
        role: role_name(m.state),
        term: m.current_term,
        leader: m.current_leader,
        committed: m.local_committed.map_or(0, |l| l.index),
        applied: m.last_applied.map_or(0, |l| l.index),
        last_log_index: m.last_log_index.unwrap_or(0),
        members,
        cluster_uuid: inner.identity.lock().expect("identity lock").cluster_uuid,
        conf_id: m.membership_config.log_id().as_ref().map_or(0, |l| l.index),
        membership_settled: membership.get_joint_config().len() == 1
            && m.membership_config
                .log_id()
                .as_ref()
                .is_none_or(|l| Some(l.index) <= m.local_committed.map(|c| c.index)),
        flow_control_paused_by: if m.state == ServerState::Leader {
            inner.flow.paused_by().0
        } else {
            inner.cluster_paused_by.lock().expect("paused lock").clone()
        },
    }
}

/// Recompute primary status on every metrics change and on a timer, so
/// that losing the leader or the quorum is noticed within the election
/// timeout even when nothing else happens.
async fn watch_primary(inner: std::sync::Weak<Inner>) {
    let tick = {
        let Some(inner) = inner.upgrade() else { return };
        Duration::from_millis(inner.config.heartbeat_ms.max(10))
    };
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let status = compute_primary(&strong);
        strong.primary.send_if_modified(|current| {
            if *current != status {
                tracing::info!(node = strong.credentials.node_id, primary = ?status, "primary status changed");
                *current = status;
                true
            } else {
                false
            }
        });
        if strong.config.arbitrator {
            hand_over_leadership(&strong).await;
        }
        drop(strong);
        tokio::time::sleep(tick).await;
    }
}

fn compute_primary(inner: &Inner) -> Primary {
    let m = inner.raft.metrics().borrow_watched().clone();
    primary_from_metrics(
        &m,
        inner.lease.until(),
        transfer_floor(inner),
        inner.config.election_timeout_max(),
    )
}

pub(crate) fn transfer_floor(inner: &Inner) -> Option<tokio::time::Instant> {
    *inner.transfer_started.lock().expect("transfer lock")
}

/// How much longer a leader's quorum stays confirmed: `limit` minus the age
/// of its last quorum acknowledgement; zero for a member that does not lead
/// or has no recent quorum. A single-voter leader always has a full lease.
/// Acknowledgements from before `transfer_floor` (when this leader started
/// handing leadership away) do not count: the new leader may already rule.
pub(crate) fn lease_remaining(
    m: &openraft::RaftMetrics<TypeConfig>,
    transfer_floor: Option<tokio::time::Instant>,
    limit: Duration,
) -> Duration {
    if m.state != ServerState::Leader {
        return Duration::ZERO;
    }
    if m.membership_config.membership().voter_ids().count() == 1 {
        return limit;
    }
    match m.last_quorum_acked.as_ref().map(|t| t.elapsed()) {
        Some(age) if transfer_floor.is_some_and(|floor| age >= floor.elapsed()) => Duration::ZERO,
        Some(age) => limit.saturating_sub(age),
        None => Duration::ZERO,
    }
}

/// The primary-component rule of DESIGN.md: a leader whose last quorum
/// acknowledgement is younger than `limit`; a follower or learner whose
/// leader confirmed such a quorum, valid until `leader_lease` (the lease is
/// anchored at the leader's acknowledgement, so a member cut off from the
/// majority — with or without its leader — stops being primary within
/// `limit` of losing it).
pub(crate) fn primary_from_metrics(
    m: &openraft::RaftMetrics<TypeConfig>,
    leader_lease: Option<tokio::time::Instant>,
    transfer_floor: Option<tokio::time::Instant>,
    limit: Duration,
) -> Primary {
    let membership = m.membership_config.membership();
    if membership.voter_ids().next().is_none() {
        return Primary::No("not a member of any cluster yet".into());
    }
    // A member that left or was removed still hears the leader, but is no
    // longer part of the component.
    if membership.get_node(&m.id).is_none() {
        return Primary::No("not in the cluster's membership".into());
    }
    match m.state {
        ServerState::Leader => {
            if lease_remaining(m, transfer_floor, limit) > Duration::ZERO {
                Primary::Yes
            } else {
                match m.last_quorum_acked.as_ref().map(|t| t.elapsed()) {
                    Some(age) => Primary::No(format!(
                        "leader without a quorum acknowledgement for {} ms",
                        age.as_millis()
                    )),
                    None => Primary::No("leader not yet acknowledged by a quorum".into()),
                }
            }
        }
        ServerState::Follower | ServerState::Learner => {
            let now = tokio::time::Instant::now();
            match (m.current_leader, leader_lease) {
                (Some(_), Some(until)) if now < until => Primary::Yes,
                (None, _) => Primary::No("no leader known".into()),
                (Some(_), Some(until)) => Primary::No(format!(
                    "the leader has not confirmed a quorum for {} ms",
                    (now - until).as_millis() as u64 + limit.as_millis() as u64
                )),
                (Some(_), None) => Primary::No("the leader has not confirmed a quorum yet".into()),
            }
        }
        ServerState::Candidate => Primary::No("election in progress".into()),
        ServerState::Shutdown => Primary::No("shut down".into()),
    }
}

/// Send this member's flow-control request to the leader: at once when it
/// changes, and every heartbeat while it stands (a pause is a lease). A
/// member that stops leading forgets the pauses it held.
async fn report_flow_control(inner: std::sync::Weak<Inner>) {
    let mut requested = match inner.upgrade() {
        Some(strong) => strong.pause_requested.subscribe(),
        None => return,
    };
    let mut was_leader = false;
    // The last request the leader took: a resume is sent until taken once.
    let mut taken: Option<bool> = None;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let tick = Duration::from_millis(strong.config.heartbeat_ms.max(10));
        let m = strong.raft.metrics().borrow_watched().clone();
        let leader = m.state == ServerState::Leader;
        if was_leader && !leader {
            strong.flow.clear();
        }
        was_leader = leader;
        let pause = *requested.borrow_and_update();
        let me = strong.credentials.node_id;
        if leader {
            if pause {
                strong.flow.pause(me);
            } else {
                strong.flow.resume(me);
            }
        } else if (pause || taken != Some(false))
            && let Some(address) = other_leader_address(&m)
            && let Ok(mut client) = strong.group_client(&address)
        {
            let request = proto::v1::FlowControlRequest {
                credentials: Some(strong.credentials.to_proto()),
                pause,
            };
            match tokio::time::timeout(tick * 4, client.flow_control(request)).await {
                Ok(Ok(_)) => taken = Some(pause),
                Ok(Err(status)) => {
                    taken = None;
                    tracing::debug!(node = me, error = %status.message(), "flow control request not taken");
                }
                Err(_) => taken = None,
            }
        }
        drop(strong);
        tokio::select! {
            _ = requested.changed() => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// A follower asks its leader, every heartbeat, how long its quorum stays
/// confirmed, and extends its own lease accordingly.
async fn probe_leader_lease(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let tick = Duration::from_millis(strong.config.heartbeat_ms.max(10));
        let leader = other_leader_address(&strong.raft.metrics().borrow_watched());
        if let Some(address) = leader
            && let Ok(mut client) = strong.group_client(&address)
        {
            let sent_at = tokio::time::Instant::now();
            let request = StatusRequest {
                credentials: Some(strong.credentials.to_proto()),
            };
            let limit = strong.config.election_timeout_max();
            if let Ok(Ok(reply)) = tokio::time::timeout(limit, client.status(request)).await {
                let reply = reply.into_inner();
                *strong.cluster_paused_by.lock().expect("paused lock") =
                    reply.flow_control_paused_by;
                let remaining = Duration::from_millis(reply.lease_remaining_ms);
                if remaining > Duration::ZERO {
                    strong.lease.extend(sent_at + remaining);
                }
            }
        }
        drop(strong);
        tokio::time::sleep(tick).await;
    }
}

/// An arbitrator that leads hands leadership to a data node that has the
/// whole log.
async fn hand_over_leadership(inner: &Inner) -> bool {
    let m = inner.raft.metrics().borrow_watched().clone();
    if m.state != ServerState::Leader {
        return false;
    }
    let Some(last) = m.last_log_index else {
        return false;
    };
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let caught_up = m.replication.as_ref().and_then(|r| {
        r.iter().find_map(|(id, matched)| {
            let node = membership.get_node(id)?;
            let full = matched.map(|l| l.index) == Some(last);
            (*id != m.id && voters.contains(id) && !node.arbitrator && full).then_some(*id)
        })
    });
    let Some(target) = caught_up else {
        return false;
    };
    tracing::info!(
        node = m.id,
        to = target,
        "handing leadership to a caught-up data node"
    );
    *inner.transfer_started.lock().expect("transfer lock") = Some(tokio::time::Instant::now());
    if let Err(e) = inner.raft.trigger().transfer_leader(target).await {
        tracing::warn!(to = target, error = %e, "leadership transfer not started");
        return false;
    }
    true
}
