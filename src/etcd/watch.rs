//! The Watch service: each stream is served by the shard actor of the core it arrived on.

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Services;
use super::status::to_status;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchRequest, WatchResponse};
use crate::runtime::current_core;
use crate::shard::{Outbox, WatchRequests};

impl Services {
    /// Has a shard serve a watch stream (the current core's, or the first off the executors) and
    /// returns the stream of its responses.
    pub async fn open_watch(&self, requests: WatchRequests) -> crate::Result<BoxStream<WatchResponse>> {
        let shard = &self.shards[current_core().unwrap_or(0) % self.shards.len()];
        let (outbox, responses) = Outbox::new();
        shard.open_stream(requests, outbox).await?;
        Ok(Box::pin(responses))
    }
}

#[tonic::async_trait]
impl Watch for Services {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
        let responses = self.open_watch(Box::pin(request.into_inner())).await.map_err(to_status)?;
        Ok(Response::new(responses))
    }
}
