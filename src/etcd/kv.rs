//! The KV service. Point reads run on the handler's core; ranges on the blocking pool; writes go
//! through the sequencer.

use tonic::{Request, Response, Status};

use super::Services;
use super::convert;
use super::status::to_status;
use super::validate::{self, check_range};
use crate::kv::{Compaction, DeleteRange, Put, RangeQuery};
use crate::mvcc::range;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::sequencer::eval;

impl Services {
    /// Answers a Range from a store snapshot.
    pub async fn range(&self, req: RangeRequest) -> crate::Result<RangeResponse> {
        check_range(&req)?;
        // A single-key read at the current revision is one lookup: answer it on this core. Anything
        // that may scan (a span, or history) goes to the blocking pool so the core never stalls.
        let is_point = req.range_end.is_empty() && req.revision == 0;
        let query = RangeQuery::from(req);
        let store = self.store.clone();
        let read = move || range::execute(&store.read_view()?, &query);
        let result = if is_point { read()? } else { self.reads.run(read).await?? };
        let header = self.header(result.revision);
        Ok(convert::range_response(result, header))
    }

    /// Deletes a key or a range of keys through the sequencer.
    pub async fn delete_range(&self, req: DeleteRangeRequest) -> crate::Result<DeleteRangeResponse> {
        validate::validate_delete(&req, self.limits)?;
        let result = self.sequencer.delete_range(DeleteRange::from(req)).await?;
        let header = self.header(result.revision);
        Ok(convert::delete_response(result, header))
    }

    /// Puts a key through the sequencer.
    pub async fn put(&self, req: PutRequest) -> crate::Result<PutResponse> {
        validate::validate_put(&req, self.limits)?;
        let result = self.sequencer.put(Put::from(req)).await?;
        let header = self.header(result.revision);
        Ok(convert::put_response(result, header))
    }

    /// Compacts the history through the sequencer.
    pub async fn compact(&self, req: CompactionRequest) -> crate::Result<CompactionResponse> {
        validate::validate_size(&req, self.limits)?;
        let revision = self.sequencer.compact(Compaction::from(req)).await?;
        Ok(CompactionResponse { header: self.header(revision) })
    }

    /// Runs a transaction. One that cannot write (no Put or DeleteRange in any branch) is answered
    /// from a committed snapshot on the blocking pool, which sees every acknowledged write as a Range
    /// does; the rest go through the sequencer.
    pub async fn txn(&self, txn: TxnRequest) -> crate::Result<TxnResponse> {
        validate::validate_txn(&txn, self.limits)?;
        let txn = convert::txn(txn)?;
        let result = if txn.is_read_only() {
            let store = self.store.clone();
            self.reads.run(move || eval::read_only_txn(&store.read_view()?, txn)).await??
        } else {
            self.sequencer.txn(txn).await?
        };
        let header = self.header(result.revision);
        Ok(convert::txn_response(result, header))
    }
}

#[tonic::async_trait]
impl Kv for Services {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Services::range(self, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Services::put(self, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Services::delete_range(self, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Services::txn(self, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        Services::compact(self, request.into_inner()).await.map(Response::new).map_err(to_status)
    }
}
