//! The KV model (`src/kv/`) and etcd's wire types: validated requests become the model's requests
//! (keys and values moved, never copied), and its results become responses, each top-level one given
//! the header it is handed (`header.rs` makes it). Wire values the model has no name for keep etcd's
//! meaning: an unknown sort order sorts nothing, an unknown sort target sorts by key, an unknown
//! compare target compares equal and an unknown compare result holds.

use super::header::nested_header;
use crate::error::{Error, Result};
use crate::ids::{LeaseId, Revision};
use crate::kv::{
    Compaction, Compare, CompareResult, CompareTarget, DeleteRange, DeleteResult, GrantedLease, LeaseGrant, Put,
    PutResult, RangeQuery, RangeResult, SortOrder, SortTarget, Txn, TxnOp, TxnOpResult, TxnResult,
};
use crate::proto::etcdserverpb::{self as pb, ResponseHeader, compare, range_request, request_op, response_op};

impl From<pb::RangeRequest> for RangeQuery {
    fn from(r: pb::RangeRequest) -> RangeQuery {
        let sort_order = match range_request::SortOrder::try_from(r.sort_order) {
            Ok(range_request::SortOrder::None) => SortOrder::None,
            Ok(range_request::SortOrder::Ascend) => SortOrder::Ascend,
            Ok(range_request::SortOrder::Descend) => SortOrder::Descend,
            Err(_) => SortOrder::Unknown,
        };
        let sort_target = match range_request::SortTarget::try_from(r.sort_target) {
            Ok(range_request::SortTarget::Key) | Err(_) => SortTarget::Key,
            Ok(range_request::SortTarget::Version) => SortTarget::Version,
            Ok(range_request::SortTarget::Create) => SortTarget::Create,
            Ok(range_request::SortTarget::Mod) => SortTarget::Mod,
            Ok(range_request::SortTarget::Value) => SortTarget::Value,
        };
        RangeQuery {
            key: r.key,
            range_end: r.range_end,
            limit: r.limit,
            revision: Revision(r.revision),
            sort_order,
            sort_target,
            keys_only: r.keys_only,
            count_only: r.count_only,
            min_mod_revision: r.min_mod_revision,
            max_mod_revision: r.max_mod_revision,
            min_create_revision: r.min_create_revision,
            max_create_revision: r.max_create_revision,
        }
    }
}

impl From<pb::PutRequest> for Put {
    fn from(r: pb::PutRequest) -> Put {
        Put {
            key: r.key,
            value: r.value,
            lease: LeaseId(r.lease),
            prev_kv: r.prev_kv,
            ignore_value: r.ignore_value,
            ignore_lease: r.ignore_lease,
        }
    }
}

impl From<pb::DeleteRangeRequest> for DeleteRange {
    fn from(r: pb::DeleteRangeRequest) -> DeleteRange {
        DeleteRange { key: r.key, range_end: r.range_end, prev_kv: r.prev_kv }
    }
}

impl From<pb::CompactionRequest> for Compaction {
    fn from(r: pb::CompactionRequest) -> Compaction {
        Compaction { revision: Revision(r.revision), physical: r.physical }
    }
}

impl From<pb::LeaseGrantRequest> for LeaseGrant {
    fn from(r: pb::LeaseGrantRequest) -> LeaseGrant {
        LeaseGrant { id: LeaseId(r.id), ttl: r.ttl }
    }
}

impl From<pb::Compare> for Compare {
    fn from(c: pb::Compare) -> Compare {
        use compare::TargetUnion as Operand;
        // An operand of another kind than the target compares as the target's zero value, as in etcd.
        let target = match compare::CompareTarget::try_from(c.target) {
            Ok(compare::CompareTarget::Value) => CompareTarget::Value(match c.target_union {
                Some(Operand::Value(v)) => v,
                _ => Vec::new(),
            }),
            Ok(compare::CompareTarget::Version) => CompareTarget::Version(match c.target_union {
                Some(Operand::Version(n)) => n,
                _ => 0,
            }),
            Ok(compare::CompareTarget::Create) => CompareTarget::Create(match c.target_union {
                Some(Operand::CreateRevision(n)) => n,
                _ => 0,
            }),
            Ok(compare::CompareTarget::Mod) => CompareTarget::Mod(match c.target_union {
                Some(Operand::ModRevision(n)) => n,
                _ => 0,
            }),
            Ok(compare::CompareTarget::Lease) => CompareTarget::Lease(match c.target_union {
                Some(Operand::Lease(n)) => n,
                _ => 0,
            }),
            Err(_) => CompareTarget::Unknown,
        };
        let result = match compare::CompareResult::try_from(c.result) {
            Ok(compare::CompareResult::Equal) => CompareResult::Equal,
            Ok(compare::CompareResult::NotEqual) => CompareResult::NotEqual,
            Ok(compare::CompareResult::Greater) => CompareResult::Greater,
            Ok(compare::CompareResult::Less) => CompareResult::Less,
            Err(_) => CompareResult::Unknown,
        };
        Compare { key: c.key, range_end: c.range_end, target, result }
    }
}

/// A validated txn in the model. Recursive, as deep as validation lets nesting go
/// (`TXN_NESTED_LEVELS_MAX`); an op with no request (refused by validation) is etcd's error for it.
pub fn txn(t: pb::TxnRequest) -> Result<Txn> {
    let ops = |ops: Vec<pb::RequestOp>| ops.into_iter().map(txn_op).collect::<Result<Vec<_>>>();
    Ok(Txn {
        compare: t.compare.into_iter().map(Compare::from).collect(),
        success: ops(t.success)?,
        failure: ops(t.failure)?,
    })
}

fn txn_op(op: pb::RequestOp) -> Result<TxnOp> {
    Ok(match op.request.ok_or(Error::KeyNotFound)? {
        request_op::Request::RequestRange(r) => TxnOp::Range(r.into()),
        request_op::Request::RequestPut(p) => TxnOp::Put(p.into()),
        request_op::Request::RequestDeleteRange(d) => TxnOp::DeleteRange(d.into()),
        request_op::Request::RequestTxn(t) => TxnOp::Txn(txn(t)?),
    })
}

pub fn range_response(r: RangeResult, header: Option<ResponseHeader>) -> pb::RangeResponse {
    pb::RangeResponse { header, kvs: r.kvs, more: r.more, count: r.count }
}

pub fn put_response(r: PutResult, header: Option<ResponseHeader>) -> pb::PutResponse {
    pb::PutResponse { header, prev_kv: r.prev_kv }
}

pub fn delete_response(r: DeleteResult, header: Option<ResponseHeader>) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse { header, deleted: r.deleted, prev_kvs: r.prev_kvs }
}

pub fn lease_grant_response(g: GrantedLease, header: Option<ResponseHeader>) -> pb::LeaseGrantResponse {
    pb::LeaseGrantResponse { header, id: g.id.get(), ttl: g.ttl, error: String::new() }
}

/// A txn's response: `header` on top; each op's response with its revision alone, and nested txns'
/// with an empty header, as etcd answers them.
pub fn txn_response(t: TxnResult, header: Option<ResponseHeader>) -> pb::TxnResponse {
    let responses = t
        .responses
        .into_iter()
        .map(|r| {
            let response = match r {
                TxnOpResult::Range(r) => {
                    let header = nested_header(r.revision);
                    response_op::Response::ResponseRange(range_response(r, header))
                }
                TxnOpResult::Put(p) => {
                    let header = nested_header(p.revision);
                    response_op::Response::ResponsePut(put_response(p, header))
                }
                TxnOpResult::DeleteRange(d) => {
                    let header = nested_header(d.revision);
                    response_op::Response::ResponseDeleteRange(delete_response(d, header))
                }
                TxnOpResult::Txn(t) => response_op::Response::ResponseTxn(txn_response(t, Some(Default::default()))),
            };
            pb::ResponseOp { response: Some(response) }
        })
        .collect();
    pb::TxnResponse { header, succeeded: t.succeeded, responses }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_orders_and_targets_etcd_does_not_know_keep_its_meaning() {
        for sort_order in [3, -1] {
            let query = RangeQuery::from(pb::RangeRequest { sort_order, sort_target: 9, ..Default::default() });
            assert_eq!(query.sort_order, SortOrder::Unknown);
            assert_eq!(query.sort_target, SortTarget::Key);
        }
    }

    #[test]
    fn a_compare_operand_of_another_kind_is_the_targets_zero_value() {
        let c = pb::Compare {
            target: compare::CompareTarget::Value as i32,
            target_union: Some(compare::TargetUnion::Version(5)),
            result: 7,
            ..Default::default()
        };
        let c = Compare::from(c);
        assert_eq!(c.target, CompareTarget::Value(Vec::new()));
        assert_eq!(c.result, CompareResult::Unknown);
        assert_eq!(Compare::from(pb::Compare { target: 9, ..Default::default() }).target, CompareTarget::Unknown);
    }

    #[test]
    fn ops_in_a_txn_answer_their_revision_alone_and_nested_txns_an_empty_header() {
        let put = TxnOpResult::Put(PutResult { prev_kv: None, revision: Revision(7) });
        let nested = TxnOpResult::Txn(TxnResult { succeeded: true, responses: vec![], revision: Revision(0) });
        let top = ResponseHeader { cluster_id: 1, member_id: 2, revision: 7, raft_term: 3 };
        let txn = TxnResult { succeeded: true, responses: vec![put, nested], revision: Revision(7) };
        let response = txn_response(txn, Some(top));
        assert_eq!(response.header, Some(top));
        let Some(response_op::Response::ResponsePut(put)) = &response.responses[0].response else { panic!() };
        assert_eq!(put.header, Some(ResponseHeader { revision: 7, ..Default::default() }));
        let Some(response_op::Response::ResponseTxn(nested)) = &response.responses[1].response else { panic!() };
        assert_eq!(nested.header, Some(ResponseHeader::default()));
    }
}
