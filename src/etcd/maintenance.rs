//! The Maintenance service: Status (what `etcdctl endpoint status` shows) and Alarm (the node's
//! [`Alarms`](crate::alarms::Alarms): listed, raised and disarmed as etcd does).

use tonic::{Request, Response, Status};

use super::Services;
use super::status::to_status;
use crate::alarms::Alarm;
use crate::mvcc::VersionReader;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, ResponseHeader, StatusRequest, StatusResponse,
};

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
            errors: self.alarms.status_errors(identity.member_id),
            db_size_in_use: db_size,
            is_learner: false,
        }))
    }

    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let request = request.into_inner();
        let member_id = self.store.identity().member_id;
        let member = |alarm: Alarm| AlarmMember { member_id, alarm: alarm.wire() };
        // etcd answers with the alarms the request matched: every raised one for GET, the one
        // raised or disarmed (if it changed) for ACTIVATE and DEACTIVATE.
        let alarms = match AlarmAction::try_from(request.action).unwrap_or(AlarmAction::Get) {
            AlarmAction::Get => self.alarms.raised().into_iter().map(member).collect(),
            action => {
                let alarm = Alarm::from_wire(request.alarm);
                let for_us = request.member_id == member_id || request.member_id == 0;
                let changed = match (alarm, for_us) {
                    (Some(alarm), true) if action == AlarmAction::Activate => self.alarms.raise(alarm).then_some(alarm),
                    (Some(alarm), true) => self.alarms.disarm(alarm).then_some(alarm),
                    _ => None,
                };
                if let Some(alarm) = changed {
                    tracing::warn!(alarm = alarm.name(), action = action.as_str_name(), "alarm changed by request");
                }
                changed.into_iter().map(member).collect()
            }
        };
        let revision = self.store.read_view().map_err(to_status)?.current_revision();
        Ok(Response::new(AlarmResponse {
            header: self.header(Some(ResponseHeader { revision, ..Default::default() })),
            alarms,
        }))
    }
}
