//! The Watch service: each stream is served by the shard actor of the core it arrived on. The shard
//! speaks the crate's errors; the stream's statuses are made here (from `status.rs`).

use std::pin::Pin;

use futures_lite::{Stream, StreamExt};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Services;
use super::status::to_status;
use crate::error::Error;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchRequest, WatchResponse};
use crate::runtime::current_core;
use crate::shard::Outbox;

/// A watch stream's requests as a transport delivers them (gRPC, the JSON gateway, an embedded
/// caller's channel).
pub type WatchRequestStream = Pin<Box<dyn Stream<Item = Result<WatchRequest, Status>> + Send>>;

impl Services {
    /// Has a shard serve a watch stream (the current core's, or the first off the executors) and
    /// returns the stream of its responses.
    pub async fn open_watch(&self, requests: WatchRequestStream) -> crate::Result<BoxStream<WatchResponse>> {
        let shard = &self.shards[current_core().unwrap_or(0) % self.shards.len()];
        // Requests that break end the responses with the requests' own status (grpc-go's, as etcd's
        // do): the shard learns only that they broke, and the status waits here.
        let (broke, broken) = flume::bounded(1);
        let requests = requests.map(move |request| {
            request.map_err(|status| {
                let _ = broke.try_send(status);
                Error::WatchRequestsBroken
            })
        });
        let (outbox, responses) = Outbox::new();
        shard.open_stream(Box::pin(requests), outbox).await?;
        Ok(Box::pin(responses.map(move |response| {
            response.map_err(|error| match error {
                Error::WatchRequestsBroken => broken.try_recv().unwrap_or_else(|_| to_status(error)),
                error => to_status(error),
            })
        })))
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
