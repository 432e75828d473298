//! The Cluster service: a single node lists itself, and answers membership changes as a
//! single-member etcd 3.4 does where it can: the only member cannot be removed or promoted, other
//! ids are not members. Adding a member, or changing this one's peer URLs, needs clustering, which
//! is not built: those answer `Unimplemented` saying so.

use tonic::{Request, Response, Status};

use super::Services;
use super::status::to_status;
use crate::error::Error;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

impl Services {
    /// Checks that `id` names this node, the only member (etcd: member not found).
    fn this_member(&self, id: u64) -> Result<(), Status> {
        if id == self.store.identity().member_id { Ok(()) } else { Err(to_status(Error::MemberNotFound)) }
    }
}

/// Whether `url` is a peer URL etcd accepts (`types.NewURLs`): an http, https, unix or unixs URL
/// whose address has the form `host:port`, without a path.
fn is_valid_peer_url(url: &str) -> bool {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else { return false };
    if !["http", "https", "unix", "unixs"].contains(&scheme.to_ascii_lowercase().as_str()) {
        return false;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    if after.starts_with('/') {
        return false; // a path
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host_port)| host_port);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((_, rest)) => match rest.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
            None => return false,
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => return false, // missing port
        }
    };
    !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit())
}

#[tonic::async_trait]
impl Cluster for Services {
    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        let urls = request.into_inner().peer_ur_ls;
        if urls.is_empty() || !urls.iter().all(|u| is_valid_peer_url(u)) {
            return Err(to_status(Error::MemberBadUrls));
        }
        Err(to_status(Error::Unimplemented(
            "MemberAdd needs clustering, which is not built yet: this node runs alone".into(),
        )))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.this_member(request.into_inner().id)?;
        // Removing the only member would leave no started member, as etcd refuses.
        Err(to_status(Error::NotEnoughStartedMembers))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.this_member(request.into_inner().id)?;
        Err(to_status(Error::Unimplemented(
            "MemberUpdate needs clustering, which is not built yet: this node has no peer URLs to update".into(),
        )))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.this_member(request.into_inner().id)?;
        // The only member is a voting member already.
        Err(to_status(Error::MemberNotLearner))
    }

    async fn member_list(&self, _request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.current_header()?,
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

#[cfg(test)]
mod tests {
    use super::is_valid_peer_url;

    #[test]
    fn peer_urls_are_checked_as_etcd_checks_them() {
        for good in ["http://127.0.0.1:2380", "https://node:1", " http://h:2380 ", "unix://sock:1", "http://[::1]:2380"]
        {
            assert!(is_valid_peer_url(good), "{good}");
        }
        for bad in ["bad", "http://127.0.0.1", "ftp://h:1", "http://h:1/path", "http://::1:2380", "http://h:port", ""] {
            assert!(!is_valid_peer_url(bad), "{bad}");
        }
    }
}
