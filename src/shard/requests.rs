//! A watch stream's requests: create, cancel and progress. Invariants: a stream's requests are read
//! one at a time by its own task, each after the groups already queued are applied; a created
//! watcher that starts behind `current` is served by the stream's catch-up task, never by live delivery.

use futures_lite::StreamExt;

use super::watch::{StreamId, WatcherKey};
use super::{Shard, ShardState, WatchRequests};
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{WatchRequest, WatchResponse};

impl Shard {
    /// Reads one stream's requests until the client goes away or the shard stops.
    pub(super) async fn serve_requests(self, stream: StreamId, mut requests: WatchRequests) {
        let stopped = self.0.borrow().stop_signal.clone();
        loop {
            if self.0.borrow().stopped {
                return;
            }
            let next = async { Some(requests.next().await) };
            let stop = async {
                stopped.notified().await;
                None
            };
            let Some(next) = futures_lite::future::or(stop, next).await else { return };
            match next {
                Some(Ok(request)) => {
                    self.drain_groups();
                    let behind = self.0.borrow_mut().handle_request(stream, request);
                    self.0.borrow().publish_watching();
                    if behind {
                        self.spawn_catch_up(stream);
                    }
                    if !self.0.borrow().streams.contains_key(&stream) {
                        return;
                    }
                }
                // A client that closes its sending side keeps its watches, as with etcd; the
                // periodic tick notices when it also stops listening.
                None => return,
                // A request that does not decode (or a broken stream) ends the stream with that
                // status, as etcd ends it with grpc-go's; closing it without one would report OK.
                Some(Err(status)) => {
                    let mut state = self.0.borrow_mut();
                    if let Some(s) = state.streams.get(&stream) {
                        s.outbox.fail(status);
                    }
                    state.close_stream(stream);
                    return;
                }
            }
        }
    }
}

impl ShardState {
    /// Handles one request of `stream`; returns whether the stream now has watchers behind that
    /// need a catch-up task started.
    fn handle_request(&mut self, stream_id: StreamId, request: WatchRequest) -> bool {
        let current = self.current;
        let header = self.header(current);
        let Some(stream) = self.streams.get_mut(&stream_id) else { return false };
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => match stream.create(&create, current) {
                Ok(watch_id) => {
                    let watcher = &stream.watchers[&watch_id];
                    self.watchers.insert(&watcher.span, WatcherKey { stream: stream_id, watch_id });
                    let synced = watcher.synced;
                    stream.outbox.push(WatchResponse { header, watch_id, created: true, ..Default::default() });
                    if !synced && !stream.catching_up {
                        stream.catching_up = true;
                        return true;
                    }
                    false
                }
                Err(e) => {
                    stream.outbox.push(WatchResponse {
                        header,
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: e.reason().to_string(),
                        ..Default::default()
                    });
                    false
                }
            },
            Some(RequestUnion::CancelRequest(cancel)) => {
                // etcd answers nothing for an id that is not watching.
                if let Some(watcher) = stream.watchers.remove(&cancel.watch_id) {
                    self.watchers.remove(&watcher.span, WatcherKey { stream: stream_id, watch_id: cancel.watch_id });
                    stream.outbox.push(WatchResponse {
                        header,
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    });
                }
                false
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Never ahead of what was delivered: a watcher behind bounds the revision reported.
                let revision =
                    stream.watchers.values().filter(|w| !w.synced).map(|w| w.next_rev - 1).min().unwrap_or(current);
                let header = self.header(revision.min(current));
                let stream = self.streams.get_mut(&stream_id).expect("looked up above");
                stream.outbox.push(WatchResponse { header, watch_id: -1, ..Default::default() });
                false
            }
            None => false,
        }
    }
}
