//! The server side of node-to-node RPCs: admission on every request, then
//! the local Raft (consensus messages) or the member API (proposals,
//! membership, status).

use std::sync::Arc;

use futures_util::StreamExt;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::ClientWriteError;
use openraft::errors::RaftError;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{ChangeMembers, ReadPolicy, Snapshot};
use proto::v1::group_client::GroupClient;
use proto::v1::group_server::{Group, GroupServer};
use proto::v1::raft_server::{Raft as RaftService, RaftServer};
use proto::v1::*;
use tonic::{Request, Response, Status};

use crate::member::{Inner, Primary, hex, is_voter, other_leader_address, status_of};
use crate::transport::{decode_request, encode_reply};
use crate::types::{MemberNode, Proposal, SnapshotMeta, TypeConfig, Vote};

/// Both gRPC services of a member.
#[derive(Clone)]
pub(crate) struct Services {
    inner: Arc<Inner>,
}

impl Services {
    pub async fn serve(inner: Arc<Inner>, listener: tokio::net::TcpListener) {
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = inner.security.server_tls() {
            builder = match builder.tls_config(tls) {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::error!(error = %e, "invalid TLS settings; node-to-node RPC server not started");
                    return;
                }
            };
        }
        let services = Services { inner };
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let result = builder
            .add_service(RaftServer::new(services.clone()).max_decoding_message_size(512 << 20))
            .add_service(GroupServer::new(services).max_decoding_message_size(512 << 20))
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "node-to-node RPC server stopped");
        }
    }

    fn admit(&self, credentials: Option<&ClusterCredentials>, joining: bool) -> Result<(), Status> {
        let uuid = self
            .inner
            .identity
            .lock()
            .expect("identity lock")
            .cluster_uuid;
        self.inner
            .admission
            .check(credentials, uuid, joining)
            .map_err(|e| {
                let from = credentials.map_or(0, |c| c.node_id);
                tracing::warn!(from, error = %e, "refused a node-to-node request");
                Status::permission_denied(format!("refused: {e}"))
            })
    }

    fn leader_address(&self) -> Option<String> {
        other_leader_address(&self.inner.raft.metrics().borrow_watched())
    }

    fn group_client(
        &self,
        address: &str,
    ) -> Result<GroupClient<tonic::transport::Channel>, Status> {
        self.inner
            .security
            .channel(address, self.inner.config.rpc_timeout())
            .map(GroupClient::new)
            .map_err(Status::unavailable)
    }
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("member is stopping: {e}"))
}

#[tonic::async_trait]
impl RaftService for Services {
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), false)?;
        let rpc: VoteRequest<TypeConfig> = decode_request(&request.payload)?;
        let result = self.inner.raft.vote(rpc).await;
        encode_reply(&result)
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), false)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode_request(&request.payload)?;
        let result = self.inner.raft.append_entries(rpc).await;
        encode_reply(&result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), false)?;
        let (vote, meta): (Vote, SnapshotMeta) = decode_request(&request.payload)?;
        let result = self
            .inner
            .raft
            .install_full_snapshot(vote, Snapshot { meta, snapshot: () })
            .await;
        encode_reply(&result)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), false)?;
        let rpc: openraft::raft::TransferLeaderRequest<TypeConfig> =
            decode_request(&request.payload)?;
        let result = self.inner.raft.handle_transfer_leader(rpc).await;
        encode_reply(&result)
    }
}

#[tonic::async_trait]
impl Group for Services {
    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), false)?;
        if let Primary::No(reason) = &*self.inner.primary.borrow() {
            return Err(Status::unavailable(format!("not primary: {reason}")));
        }
        // Held by flow control for at most half the proposer's RPC deadline;
        // the proposer retries until its own.
        let hold = tokio::time::Instant::now() + self.inner.config.rpc_timeout() / 2;
        if let Err(holders) = self.inner.flow.wait_open(hold).await {
            return Err(Status::unavailable(format!(
                "proposals are held by flow control: members {holders:?} are catching up"
            )));
        }
        // The whole batch goes to Raft at once (one append, one fsync).
        let mut results = self
            .inner
            .raft
            .client_write_many(request.entries.into_iter().map(Proposal))
            .await
            .map_err(fatal)?;
        let mut seqnos = Vec::new();
        while let Some(result) = results.next().await {
            match result.map_err(fatal)? {
                Ok(written) => seqnos.push(written.log_id.index),
                Err(ClientWriteError::ForwardToLeader(f)) => {
                    // Proposers forward at most once; they retry with the hint.
                    let leader = f.leader_node.map(|n| n.address).unwrap_or_default();
                    return Err(Status::failed_precondition(format!(
                        "not the leader; leader: {leader}"
                    )));
                }
                Err(e) => return Err(Status::aborted(e.to_string())),
            }
        }
        Ok(Response::new(ProposeResponse { seqnos }))
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), false)?;
        match self
            .inner
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
        {
            Ok(read) => Ok(Response::new(ReadIndexResponse {
                seqno: read.index(),
            })),
            Err(RaftError::APIError(e)) => Err(Status::failed_precondition(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), true)?;
        let raft = &self.inner.raft;
        if !raft.is_leader() {
            let address = self
                .leader_address()
                .ok_or_else(|| Status::unavailable("no leader known; try again"))?;
            return self.group_client(&address)?.join(request).await;
        }
        let uuid = self
            .inner
            .identity
            .lock()
            .expect("identity lock")
            .cluster_uuid
            .ok_or_else(|| Status::unavailable("this member has no cluster yet"))?;
        let joiner = request.credentials.as_ref().map_or(0, |c| c.node_id);
        if joiner == 0 {
            return Err(Status::invalid_argument("joiner presented node id 0"));
        }
        let node = MemberNode {
            address: request.address.clone(),
            arbitrator: request.arbitrator,
            client_address: request.client_address.clone(),
        };
        let inner = self.inner.clone();
        tracing::info!(joiner, address = %node.address, arbitrator = node.arbitrator, uuid = %hex(&uuid), "admitting a new member");
        tokio::spawn(async move { admit_member(inner, joiner, node).await });
        Ok(Response::new(JoinResponse {
            cluster_uuid: uuid.to_vec(),
            leader_id: self.inner.credentials.node_id,
        }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), false)?;
        let leaver = request.credentials.as_ref().map_or(0, |c| c.node_id);
        match self
            .inner
            .raft
            .change_membership(ChangeMembers::RemoveVoters([leaver].into()), false)
            .await
        {
            Ok(_) => Ok(Response::new(LeaveResponse {})),
            Err(RaftError::APIError(e)) => Err(Status::failed_precondition(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    async fn members(
        &self,
        request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), true)?;
        Ok(Response::new(MembersResponse {
            members: status_response(&self.inner).members,
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), true)?;
        let mut response = status_response(&self.inner);
        // The lease vouches for a member of this cluster only: a member
        // that was removed must not stay primary by asking.
        let asker = request.credentials.as_ref().map_or(0, |c| c.node_id);
        let m = self.inner.raft.metrics().borrow_watched().clone();
        if m.membership_config.membership().get_node(&asker).is_none() {
            response.lease_remaining_ms = 0;
        }
        Ok(Response::new(response))
    }

    async fn flow_control(
        &self,
        request: Request<FlowControlRequest>,
    ) -> Result<Response<FlowControlResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), false)?;
        let node = request.credentials.as_ref().map_or(0, |c| c.node_id);
        if !self.inner.raft.is_leader() {
            return Err(Status::failed_precondition(format!(
                "not the leader; leader: {}",
                self.leader_address().unwrap_or_default()
            )));
        }
        let m = self.inner.raft.metrics().borrow_watched().clone();
        if m.membership_config.membership().get_node(&node).is_none() {
            return Err(Status::permission_denied(format!(
                "node {node} is not a member and cannot hold proposals"
            )));
        }
        if request.pause {
            self.inner.flow.pause(node);
        } else {
            self.inner.flow.resume(node);
        }
        Ok(Response::new(FlowControlResponse {}))
    }
}

/// Add `joiner` as a learner, then promote it to voter once it has caught
/// up. Membership changes go one at a time (Raft allows one in flight), so
/// concurrent joins queue here and are retried while the leader is busy.
async fn admit_member(inner: Arc<Inner>, joiner: u64, node: MemberNode) {
    let _one_at_a_time = inner.membership_changes.lock().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut learner_added = false;
    loop {
        let step = if !learner_added {
            // blocking = true returns once the learner has the log; a joiner
            // that dies while catching up must not hold up later joins.
            let add = inner.raft.add_learner(joiner, node.clone(), true);
            match tokio::time::timeout_at(deadline, add).await {
                Ok(result) => result.map(|_| learner_added = true),
                Err(_) => {
                    tracing::warn!(joiner, "joiner did not catch up in time; removing it");
                    let _ = inner
                        .raft
                        .change_membership(ChangeMembers::RemoveNodes([joiner].into()), false)
                        .await;
                    return;
                }
            }
        } else {
            inner
                .raft
                .change_membership(ChangeMembers::AddVoterIds([joiner].into()), false)
                .await
                .map(|_| ())
        };
        match step {
            Ok(()) if learner_added && is_voter(&inner, joiner) => {
                tracing::info!(joiner, "new member is a voter");
                return;
            }
            Ok(()) if tokio::time::Instant::now() < deadline => continue,
            Ok(()) => {
                tracing::warn!(joiner, "could not promote the new member in time");
                return;
            }
            Err(RaftError::Fatal(e)) => {
                tracing::warn!(joiner, error = %e, "leader stopping; the joiner must retry");
                return;
            }
            Err(RaftError::APIError(e)) => {
                if tokio::time::Instant::now() >= deadline || !inner.raft.is_leader() {
                    tracing::warn!(joiner, error = %e, "could not admit the new member");
                    return;
                }
                tracing::debug!(joiner, error = %e, "membership change busy; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

fn status_response(inner: &Inner) -> StatusResponse {
    let s = status_of(inner);
    let (primary, reason) = match &s.primary {
        Primary::Yes => (true, String::new()),
        Primary::No(r) => (false, r.clone()),
    };
    let identity = inner.identity.lock().expect("identity lock").clone();
    StatusResponse {
        node_id: s.node_id,
        primary,
        reason,
        role: s.role.to_string(),
        term: s.term,
        leader_id: s.leader.unwrap_or(0),
        committed: s.committed,
        applied: s.applied,
        last_log_index: s.last_log_index,
        members: s
            .members
            .iter()
            .map(|m| Member {
                node_id: m.node_id,
                address: m.address.clone(),
                role: if m.voter {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                } as i32,
                arbitrator: m.arbitrator,
                leader: s.leader == Some(m.node_id),
                term: s.term,
                committed: m.matched.unwrap_or(0),
                applied: if m.node_id == s.node_id { s.applied } else { 0 },
            })
            .collect(),
        lease_remaining_ms: {
            let m = inner.raft.metrics().borrow_watched().clone();
            crate::member::lease_remaining(
                &m,
                crate::member::transfer_floor(inner),
                inner.config.election_timeout_max(),
            )
            .as_millis() as u64
        },
        flow_control_paused_by: s.flow_control_paused_by.clone(),
        cluster_name: identity.cluster_name,
        cluster_uuid: identity
            .cluster_uuid
            .map(|u| u.to_vec())
            .unwrap_or_default(),
    }
}
