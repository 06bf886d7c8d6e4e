//! The server side of node-to-node RPCs: admission on every request, then
//! the local Raft (consensus messages) or the member API (proposals,
//! membership, status).

use std::sync::Arc;

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

use crate::member::{Inner, Primary, hex, status_of};
use crate::transport::{channel, decode_request, encode_reply};
use crate::types::{MemberNode, Proposal, SnapshotMeta, TypeConfig, Vote};

/// Both gRPC services of a member.
#[derive(Clone)]
pub(crate) struct Services {
    inner: Arc<Inner>,
}

impl Services {
    pub async fn serve(inner: Arc<Inner>, listener: tokio::net::TcpListener) {
        let services = Services { inner };
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let result = tonic::transport::Server::builder()
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
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader.filter(|l| *l != m.id)?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.address.clone())
    }

    fn group_client(
        &self,
        address: &str,
    ) -> Result<GroupClient<tonic::transport::Channel>, Status> {
        channel(address, self.inner.config.rpc_timeout())
            .map(GroupClient::new)
            .map_err(|e| Status::unavailable(e.to_string()))
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
        if let Ok(
            openraft::raft::AppendEntriesResponse::Success
            | openraft::raft::AppendEntriesResponse::PartialSuccess(_),
        ) = &result
        {
            self.inner.contact.touch();
        }
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
        let mut seqnos = Vec::with_capacity(request.entries.len());
        for data in request.entries {
            match self.inner.raft.client_write(Proposal(data)).await {
                Ok(response) => seqnos.push(response.log_id.index),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    // Proposers forward at most once; they retry with the hint.
                    let leader = f.leader_node.map(|n| n.address).unwrap_or_default();
                    return Err(Status::failed_precondition(format!(
                        "not the leader; leader: {leader}"
                    )));
                }
                Err(RaftError::APIError(e)) => return Err(Status::aborted(e.to_string())),
                Err(RaftError::Fatal(e)) => return Err(fatal(e)),
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
        };
        let raft = raft.clone();
        tracing::info!(joiner, address = %node.address, arbitrator = node.arbitrator, uuid = %hex(&uuid), "admitting a new member");
        tokio::spawn(async move {
            // Learner first; voter once it has caught up (add_learner with
            // blocking=true returns when the learner has the log).
            if let Err(e) = raft.add_learner(joiner, node, true).await {
                tracing::warn!(joiner, error = %e, "adding learner failed");
                return;
            }
            if let Err(e) = raft
                .change_membership(ChangeMembers::AddVoterIds([joiner].into()), false)
                .await
            {
                tracing::warn!(joiner, error = %e, "promoting learner to voter failed");
            }
        });
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
        Ok(Response::new(status_response(&self.inner)))
    }

    async fn flow_control(
        &self,
        request: Request<FlowControlRequest>,
    ) -> Result<Response<FlowControlResponse>, Status> {
        let request = request.into_inner();
        self.admit(request.credentials.as_ref(), false)?;
        Err(Status::unimplemented(
            "flow control is not implemented by this version; proposals are never paused",
        ))
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
        cluster_name: identity.cluster_name,
        cluster_uuid: identity
            .cluster_uuid
            .map(|u| u.to_vec())
            .unwrap_or_default(),
    }
}
