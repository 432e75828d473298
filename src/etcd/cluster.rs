//! The Cluster service: a single node lists itself. Membership changes arrive with clustering.

use tonic::{Request, Response, Status};

use super::Services;
use super::status::to_status;
use crate::mvcc::VersionReader;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{Member, MemberListRequest, MemberListResponse, ResponseHeader};

#[tonic::async_trait]
impl Cluster for Services {
    async fn member_list(&self, _request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        let revision = self.store.read_view().map_err(to_status)?.current_revision();
        Ok(Response::new(MemberListResponse {
            header: self.header(Some(ResponseHeader { revision, ..Default::default() })),
            members: vec![Member {
                id: self.store.identity().member_id,
                name: self.name.clone(),
                peer_ur_ls: vec![],
                client_ur_ls: self.client_urls.clone(),
                is_learner: false,
            }],
        }))
    }
}
