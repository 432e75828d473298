//! The Lease service. Grants and revokes go through the sequencer (they are log records);
//! keep-alives and TTL queries go to the shard that owns the lease's timer.

use futures_lite::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Services;
use super::convert;
use super::status::to_status;
use crate::ids::LeaseId;
use crate::kv::LeaseGrant;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use crate::shard::{ShardHandle, lease_owner};

impl Services {
    fn lease_shard(&self, id: i64) -> &ShardHandle {
        &self.shards[lease_owner(id, self.shards.len())]
    }

    /// Grants a lease (`id` 0: the node picks one).
    pub async fn lease_grant(&self, req: LeaseGrantRequest) -> crate::Result<LeaseGrantResponse> {
        super::validate::validate_size(&req, self.limits)?;
        let granted = self.sequencer.lease_grant(LeaseGrant::from(req)).await?;
        Ok(convert::lease_grant_response(granted, self.header(granted.revision)))
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub async fn lease_revoke(&self, req: LeaseRevokeRequest) -> crate::Result<LeaseRevokeResponse> {
        super::validate::validate_size(&req, self.limits)?;
        let revision = self.sequencer.lease_revoke(LeaseId(req.id)).await?;
        Ok(LeaseRevokeResponse { header: self.header(revision) })
    }

    /// Renews a lease for its full TTL. As etcd does, a lease that does not exist gets TTL 0.
    pub async fn lease_keep_alive_once(&self, id: i64) -> crate::Result<LeaseKeepAliveResponse> {
        let (ttl, revision) = self.lease_shard(id).keep_alive(id).await?;
        Ok(LeaseKeepAliveResponse { header: self.header(revision), id, ttl: ttl.unwrap_or(0) })
    }

    /// A lease's granted and remaining TTL, and its keys if asked. As etcd does, a lease that does
    /// not exist gets TTL -1 rather than an error.
    pub async fn lease_time_to_live(&self, req: LeaseTimeToLiveRequest) -> crate::Result<LeaseTimeToLiveResponse> {
        let (ttl, revision) = self.lease_shard(req.id).time_to_live(req.id).await?;
        let not_found =
            LeaseTimeToLiveResponse { header: self.header(revision), id: req.id, ttl: -1, ..Default::default() };
        let Some(ttl) = ttl else { return Ok(not_found) };
        let keys = if req.keys {
            match self.sequencer.lease_keys(LeaseId(req.id)).await? {
                Some(keys) => keys,
                None => return Ok(not_found), // revoked in between
            }
        } else {
            Vec::new()
        };
        Ok(LeaseTimeToLiveResponse {
            header: self.header(revision),
            id: req.id,
            ttl: ttl.remaining,
            granted_ttl: ttl.granted,
            keys,
        })
    }

    /// Every lease, in id order.
    pub async fn lease_leases(&self) -> crate::Result<LeaseLeasesResponse> {
        let leases = self.sequencer.leases().await?;
        let revision = self.store.current_revision()?;
        Ok(LeaseLeasesResponse {
            header: self.header(revision),
            leases: leases.into_iter().map(|(id, _)| LeaseStatus { id: id.get() }).collect(),
        })
    }
}

/// A stream of keep-alive requests, from gRPC or from the JSON gateway.
pub type KeepAliveRequests =
    std::pin::Pin<Box<dyn futures_lite::Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send>>;

impl Services {
    /// Answers keep-alive requests one at a time, in order; the answers end when the requests do,
    /// after an error, or when the node shuts down.
    pub fn keep_alive_answers(&self, requests: KeepAliveRequests) -> BoxStream<LeaseKeepAliveResponse> {
        let state = (requests, self.shutdown.clone(), self.clone());
        let responses = futures_lite::stream::unfold(state, |(mut requests, mut shutdown, services)| async move {
            let next = async { requests.next().await };
            let stopped = async {
                let _ = shutdown.wait_for(|stop| *stop).await;
                None
            };
            let response = match futures_lite::future::or(stopped, next).await? {
                Ok(request) => services.lease_keep_alive_once(request.id).await.map_err(to_status),
                Err(status) => Err(status),
            };
            Some((response, (requests, shutdown, services)))
        });
        Box::pin(responses)
    }
}

#[tonic::async_trait]
impl Lease for Services {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        Services::lease_grant(self, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        Services::lease_revoke(self, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<LeaseKeepAliveResponse>>, Status> {
        Ok(Response::new(self.keep_alive_answers(Box::pin(request.into_inner()))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        Services::lease_time_to_live(self, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Services::lease_leases(self).await.map(Response::new).map_err(to_status)
    }
}
