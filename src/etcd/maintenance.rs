//! The Maintenance service: Status (what `etcdctl endpoint status` shows) and Alarm (no alarm is
//! ever raised on this node yet, so the list is truthfully empty).

use tonic::{Request, Response, Status};

use super::Services;
use super::status::to_status;
use crate::mvcc::VersionReader;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{AlarmRequest, AlarmResponse, ResponseHeader, StatusRequest, StatusResponse};

/// The etcd API version T4 answers as (the behaviour it is tested against).
pub const ETCD_API_VERSION: &str = "3.4.0";

#[tonic::async_trait]
impl Maintenance for Services {
    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let store = self.store.clone();
        let (revision, db_size) = self
            .reads
            .run(move || -> crate::Result<(i64, u64)> {
                Ok((store.read_view()?.current_revision(), store.disk_bytes()))
            })
            .await
            .and_then(|r| r)
            .map_err(to_status)?;
        let identity = self.store.identity();
        let db_size = i64::try_from(db_size).unwrap_or(i64::MAX);
        Ok(Response::new(StatusResponse {
            header: self.header(Some(ResponseHeader { revision, ..Default::default() })),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: identity.member_id,
            raft_index: revision as u64,
            raft_term: identity.term,
            raft_applied_index: revision as u64,
            errors: vec![],
            db_size_in_use: db_size,
            is_learner: false,
        }))
    }

    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let action = AlarmAction::try_from(request.get_ref().action).unwrap_or(AlarmAction::Get);
        if action == AlarmAction::Activate {
            return Err(Status::unimplemented("raising alarms by request is not supported"));
        }
        let revision = self.store.read_view().map_err(to_status)?.current_revision();
        Ok(Response::new(AlarmResponse {
            header: self.header(Some(ResponseHeader { revision, ..Default::default() })),
            alarms: vec![],
        }))
    }
}
