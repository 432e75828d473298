//! The KV service. Point reads run on the handler's core; ranges on the blocking pool; writes go
//! through the sequencer.

use tonic::{Request, Response, Status};

use super::Services;
use super::status::to_status;
use super::validate::{self, check_range};
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
        let store = self.store.clone();
        let read = move || range::execute(&store.read_view()?, &req);
        if is_point {
            return read();
        }
        self.reads.run(read).await?
    }

    /// Deletes a key or a range of keys through the sequencer.
    pub async fn delete_range(&self, req: DeleteRangeRequest) -> crate::Result<DeleteRangeResponse> {
        validate::validate_delete(&req, self.limits)?;
        self.sequencer.delete_range(req).await
    }

    /// Puts a key through the sequencer.
    pub async fn put(&self, req: PutRequest) -> crate::Result<PutResponse> {
        validate::validate_put(&req, self.limits)?;
        self.sequencer.put(req).await
    }

    /// Compacts the history through the sequencer.
    pub async fn compact(&self, req: CompactionRequest) -> crate::Result<CompactionResponse> {
        validate::validate_size(&req, self.limits)?;
        self.sequencer.compact(req).await
    }

    /// Runs a transaction. One that cannot write (no Put or DeleteRange in any branch) is answered
    /// from a committed snapshot on the blocking pool, which sees every acknowledged write as a Range
    /// does; the rest go through the sequencer.
    pub async fn txn(&self, txn: TxnRequest) -> crate::Result<TxnResponse> {
        if eval::is_read_only(&txn) {
            validate::validate_txn(&txn, self.limits)?;
            let store = self.store.clone();
            return self.reads.run(move || eval::read_only_txn(&store.read_view()?, &txn)).await?;
        }
        validate::validate_txn(&txn, self.limits)?;
        self.sequencer.txn(txn).await
    }
}

#[tonic::async_trait]
impl Kv for Services {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let mut resp = Services::range(self, request.into_inner()).await.map_err(to_status)?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let mut resp = Services::put(self, request.into_inner()).await.map_err(to_status)?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let mut resp = Services::delete_range(self, request.into_inner()).await.map_err(to_status)?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let mut resp = Services::txn(self, request.into_inner()).await.map_err(to_status)?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let mut resp = Services::compact(self, request.into_inner()).await.map_err(to_status)?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }
}
