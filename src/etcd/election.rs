//! The `v3electionpb.Election` service, as etcd 3.4 serves it (`v3election` over
//! `concurrency.Election`): a campaigner puts `name/<lease hex>` with its value and leads once every
//! key under `name/` created before it is gone; the leader is the key created first; Proclaim and
//! Resign act only while the leader key still has its creation revision. A waiting Campaign ends when
//! its client leaves (it resigns, as etcd does) or the node shuts down; Observe streams the leader's
//! values in order until its client leaves or the node shuts down.

use std::collections::VecDeque;

use futures_lite::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::Services;
use super::concurrency::{CleanupIfAbandoned, created_at, first_created, owners_prefix, put_op, resign_txn};
use super::status::to_status;
use crate::error::Error;
use crate::proto::etcdserverpb::{ResponseHeader, TxnRequest, WatchResponse};
use crate::proto::mvccpb::KeyValue;
use crate::proto::mvccpb::event::EventType;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse,
    ResignRequest, ResignResponse,
};

impl Services {
    /// Campaigns in election `name` with `value` for `lease`, waiting until it leads.
    async fn campaign(&self, request: CampaignRequest) -> Result<CampaignResponse, Status> {
        let entry = self.enter(&request.name, request.lease, &request.value, false).await?;
        let leader_revision = entry.created();
        if let Some(earlier) = &entry.earlier
            && earlier.value != request.value
        {
            // This lease campaigns already: it keeps its place and posts the new value.
            let proclaimed = self.proclaim_as(&entry.key, leader_revision, entry.lease, &request.value).await;
            if let Err(status) = proclaimed {
                let _ = self.client_txn(resign_txn(&entry.key, leader_revision)).await;
                return Err(status);
            }
        }
        let cleanup = CleanupIfAbandoned::new(self, resign_txn(&entry.key, leader_revision));
        let waited = self.until_shutdown(self.wait_deletes(&entry.prefix, leader_revision - 1)).await;
        cleanup.disarm();
        match waited {
            // etcd answers with the header of the campaign's txn, not of the wait.
            Some(Ok(_)) => Ok(CampaignResponse {
                header: entry.header,
                leader: Some(LeaderKey {
                    name: request.name,
                    key: entry.key,
                    rev: leader_revision,
                    lease: entry.lease,
                }),
            }),
            // A wait that fails for another reason than a cancel leaves the key, as etcd does.
            Some(Err(status)) => Err(status),
            None => Err(to_status(Error::Closed)),
        }
    }

    /// Posts `value` on `key` while it still has creation revision `revision` (`Proclaim`).
    async fn proclaim_as(
        &self,
        key: &[u8],
        revision: i64,
        lease: i64,
        value: &[u8],
    ) -> Result<Option<ResponseHeader>, Status> {
        let txn = TxnRequest {
            compare: vec![created_at(key, revision)],
            success: vec![put_op(key, value, lease)],
            failure: vec![],
        };
        let resp = self.client_txn(txn).await?;
        if !resp.succeeded {
            return Err(to_status(Error::ElectionNotLeader));
        }
        Ok(resp.header)
    }

    /// The leader of the election under `prefix`: its key created first (`Leader`).
    async fn election_leader(&self, prefix: &[u8]) -> Result<(Option<ResponseHeader>, Option<KeyValue>), Status> {
        let resp = self.client_range(first_created(prefix)).await?;
        Ok((resp.header, resp.kvs.into_iter().next()))
    }
}

/// Follows an election for Observe (`Election.observe`): the leader now (or the first one to come),
/// then each value it proclaims, until its key is deleted; then the next leader, and so on.
struct Observer {
    services: Services,
    prefix: Vec<u8>,
    /// The watch on the current leader's key, once its first answer was sent.
    following: Option<BoxStream<WatchResponse>>,
    /// Answers taken from one watch response and not yet sent.
    queued: VecDeque<LeaderResponse>,
}

impl Observer {
    /// The next answer; `None` ends the stream (as etcd's ends when a read or watch fails).
    async fn next(&mut self) -> Option<LeaderResponse> {
        loop {
            if let Some(answer) = self.queued.pop_front() {
                return Some(answer);
            }
            let Some(following) = self.following.as_mut() else {
                let (header, kv) = self.services.next_leader(&self.prefix).await?;
                self.following = Some(self.services.watch_from(&kv.key, &[], header.revision + 1).await.ok()?);
                return Some(LeaderResponse { header: Some(header), kv: Some(kv) });
            };
            let response = following.next().await?.ok()?;
            for event in response.events {
                if event.r#type == EventType::Delete as i32 {
                    self.following = None;
                    break;
                }
                self.queued.push_back(LeaderResponse { header: response.header, kv: event.kv });
            }
        }
    }
}

impl Services {
    /// The leader of the election under `prefix` now, or else the first key put there from now on
    /// (its header's revision is that put's, as etcd sets it); `None` if a read or watch fails.
    async fn next_leader(&self, prefix: &[u8]) -> Option<(ResponseHeader, KeyValue)> {
        let (header, leader) = self.election_leader(prefix).await.ok()?;
        let header = header.unwrap_or_default();
        if let Some(kv) = leader {
            return Some((header, kv));
        }
        let mut puts = self.watch_from(prefix, &crate::prefix_end(prefix), header.revision).await.ok()?;
        loop {
            let response = puts.next().await?.ok()?;
            if response.canceled {
                return None;
            }
            let put = response.events.into_iter().find(|e| e.r#type == EventType::Put as i32);
            if let Some(kv) = put.and_then(|e| e.kv) {
                let header = ResponseHeader { revision: kv.mod_revision, ..response.header.unwrap_or_default() };
                return Some((header, kv));
            }
        }
    }
}

#[tonic::async_trait]
impl Election for Services {
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        Services::campaign(self, request.into_inner()).await.map(Response::new)
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        let request = request.into_inner();
        let leader = request.leader.ok_or_else(|| to_status(Error::LeaderKeyMissing))?;
        let lease = self.session_lease(leader.lease).await?;
        let header = self.proclaim_as(&leader.key, leader.rev, lease, &request.value).await?;
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let (header, kv) = self.election_leader(&owners_prefix(&request.into_inner().name)).await?;
        let kv = kv.ok_or_else(|| to_status(Error::ElectionNoLeader))?;
        Ok(Response::new(LeaderResponse { header, kv: Some(kv) }))
    }

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<BoxStream<LeaderResponse>>, Status> {
        Ok(Response::new(self.observe_answers(request.into_inner())))
    }

    /// Deletes the leader key if it still has its creation revision; answers alike either way.
    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let leader = request.into_inner().leader.ok_or_else(|| to_status(Error::LeaderKeyMissing))?;
        // etcd's service opens a session (granting a lease for 0) before it resigns.
        self.session_lease(leader.lease).await?;
        let resp = self.client_txn(resign_txn(&leader.key, leader.rev)).await?;
        Ok(Response::new(ResignResponse { header: resp.header }))
    }
}

impl Services {
    /// Observe's answers for election `request.name`, ending when the node shuts down (with
    /// etcd's "server stopped").
    pub fn observe_answers(&self, request: LeaderRequest) -> BoxStream<LeaderResponse> {
        let observer = Observer {
            services: self.clone(),
            prefix: owners_prefix(&request.name),
            following: None,
            queued: VecDeque::new(),
        };
        let answers = futures_lite::stream::unfold(Some(observer), |observer| async move {
            let mut observer = observer?;
            let services = observer.services.clone();
            match services.until_shutdown(observer.next()).await {
                Some(Some(answer)) => Some((Ok(answer), Some(observer))),
                Some(None) => None,
                None => Some((Err(to_status(Error::Closed)), None)),
            }
        });
        Box::pin(answers)
    }
}
