//! The response header etcd puts on every top-level response: the cluster's and this member's ids,
//! the term, and a revision. Filled here alone, once per response; the layers below return bare
//! revisions. (Responses nested in a txn carry only their revision, as etcd's do.)

use super::Services;
use crate::ids::Revision;
use crate::mvcc::VersionReader;
use crate::mvcc::store::Identity;
use crate::proto::etcdserverpb::ResponseHeader;

impl Identity {
    /// The header etcd puts on every response from this member, at `revision`.
    pub fn response_header(&self, revision: Revision) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: revision.get(),
            raft_term: self.term.get(),
        }
    }
}

impl Services {
    /// The header of a top-level response at `revision`.
    pub(super) fn header(&self, revision: Revision) -> Option<ResponseHeader> {
        Some(self.store.identity().response_header(revision))
    }

    /// A header at the current revision, for answers that read nothing else.
    pub(super) fn current_header(&self) -> Result<Option<ResponseHeader>, tonic::Status> {
        let revision = self.store.read_view().map_err(super::status::to_status)?.current_revision();
        Ok(self.header(revision))
    }
}

/// The header of a response nested in a txn: its revision alone.
pub(super) fn nested_header(revision: Revision) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision: revision.get(), ..Default::default() })
}
