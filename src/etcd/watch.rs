//! The Watch service: each stream is served by the shard actor of the core it arrived on. The shard
//! speaks in its own terms (`StreamRequest`, `WatchOutput`) and the crate's errors; here requests
//! are read as etcd reads them, every response is made (its header filled once, here), and the
//! stream's statuses are made (from `status.rs`).

use std::pin::Pin;

use futures_lite::{Stream, StreamExt};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Services;
use super::status::to_status;
use crate::error::Error;
use crate::ids::{Revision, WatchId};
use crate::mvcc::KeySpan;
use crate::mvcc::store::Identity;
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::runtime::current_core;
use crate::shard::{EventFilter, Outbox, StreamRequest, WatchCreate, WatchOutput};

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
        let requests = requests.filter_map(move |request| match request {
            Ok(request) => stream_request(request).map(Ok),
            Err(status) => {
                let _ = broke.try_send(status);
                Some(Err(Error::WatchRequestsBroken))
            }
        });
        let identity = self.store.identity();
        let (outbox, outputs) = Outbox::new();
        shard.open_stream(Box::pin(requests), outbox).await?;
        Ok(Box::pin(outputs.map(move |output| match output {
            Ok(output) => Ok(watch_response(output, &identity)),
            Err(Error::WatchRequestsBroken) => {
                Err(broken.try_recv().unwrap_or_else(|_| to_status(Error::WatchRequestsBroken)))
            }
            Err(error) => Err(to_status(error)),
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

/// etcd's `AutoWatchID`: a create request with this id asks the server to pick one.
const AUTO_WATCH_ID: i64 = 0;

/// The watch id etcd puts on responses that concern no watcher.
const NO_WATCH_ID: i64 = -1;

/// A client's request in the shard's terms; `None` for one that asks nothing (etcd ignores it).
fn stream_request(request: WatchRequest) -> Option<StreamRequest> {
    Some(match request.request_union? {
        RequestUnion::CreateRequest(create) => StreamRequest::Create(watch_create(&create)),
        RequestUnion::CancelRequest(cancel) => StreamRequest::Cancel(WatchId(cancel.watch_id)),
        RequestUnion::ProgressRequest(_) => StreamRequest::Progress,
    })
}

/// A create request as etcd reads it.
fn watch_create(c: &WatchCreateRequest) -> WatchCreate {
    let has = |f: FilterType| c.filters.contains(&(f as i32));
    WatchCreate {
        span: watch_span(c),
        start_revision: Revision(c.start_revision),
        filter: EventFilter {
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: c.prev_kv,
        },
        progress_notify: c.progress_notify,
        fragment: c.fragment,
        watch_id: (c.watch_id != AUTO_WATCH_ID).then_some(WatchId(c.watch_id)),
    }
}

/// The keys a create request watches, read as etcd reads it: an empty key is `\0` (the smallest
/// key), an empty `range_end` is the key alone, and `\0` is every key from `key` on.
fn watch_span(c: &WatchCreateRequest) -> KeySpan {
    let key = if c.key.is_empty() { vec![0] } else { c.key.clone() };
    KeySpan::from_etcd(&key, &c.range_end)
}

/// The response etcd sends for `output`, its header naming `identity`. Its size is what
/// `WatchOutput::encoded_len` counts.
pub(crate) fn watch_response(output: WatchOutput, identity: &Identity) -> WatchResponse {
    // etcd's compacted answer reports a zero header revision (`header_revision` says so).
    let header = Some(identity.response_header(output.header_revision()));
    match output {
        WatchOutput::Created { watch_id, .. } => {
            WatchResponse { header, watch_id: watch_id.get(), created: true, ..Default::default() }
        }
        WatchOutput::Refused { reason, .. } => WatchResponse {
            header,
            watch_id: NO_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        },
        WatchOutput::Events { watch_id, events, fragment, .. } => {
            WatchResponse { header, watch_id: watch_id.get(), events, fragment, ..Default::default() }
        }
        WatchOutput::Progress { watch_id, .. } => {
            WatchResponse { header, watch_id: watch_id.get(), ..Default::default() }
        }
        WatchOutput::StreamProgress { .. } => WatchResponse { header, watch_id: NO_WATCH_ID, ..Default::default() },
        WatchOutput::Canceled { watch_id, .. } => {
            WatchResponse { header, watch_id: watch_id.get(), canceled: true, ..Default::default() }
        }
        // etcd's compacted answer: canceled, with the compact revision.
        WatchOutput::Compacted { watch_id, compact_revision } => WatchResponse {
            header,
            watch_id: watch_id.get(),
            canceled: true,
            compact_revision: compact_revision.get(),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::ids::Term;
    use crate::proto::mvccpb::{Event, KeyValue};
    use crate::shard::{CreateError, fragments};

    fn create(key: &[u8], end: &[u8]) -> WatchCreateRequest {
        WatchCreateRequest { key: key.to_vec(), range_end: end.to_vec(), ..Default::default() }
    }

    fn event(n: u8) -> Event {
        Event { kv: Some(KeyValue { key: vec![n], value: vec![n; 100], ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn an_empty_key_watches_from_the_smallest_key() {
        assert_eq!(watch_span(&create(b"", b"\0")), KeySpan::from_etcd(b"\0", b"\0"));
        assert_eq!(watch_span(&create(b"", b"")), KeySpan::from_etcd(b"\0", b""));
    }

    #[test]
    fn outputs_count_the_bytes_of_their_responses() {
        let small = Identity { member_id: 1, cluster_id: 2, term: Term(3) };
        let large = Identity { member_id: u64::MAX, cluster_id: 1 << 40, term: Term(1 << 20) };
        let id = WatchId(7);
        let outputs = [
            WatchOutput::Created { watch_id: WatchId(0), revision: Revision(1) },
            WatchOutput::Created { watch_id: id, revision: Revision(1 << 33) },
            WatchOutput::Refused { reason: CreateError::EmptyRange, revision: Revision(5) },
            WatchOutput::Refused { reason: CreateError::DuplicateId, revision: Revision(0) },
            WatchOutput::Events {
                watch_id: id,
                revision: Revision(300),
                events: vec![event(1), event(2)],
                fragment: true,
            },
            WatchOutput::Events {
                watch_id: WatchId(0),
                revision: Revision(3),
                events: vec![event(3)],
                fragment: false,
            },
            WatchOutput::Events { watch_id: WatchId(1 << 40), revision: Revision(3), events: vec![], fragment: false },
            WatchOutput::Progress { watch_id: id, revision: Revision(9) },
            WatchOutput::StreamProgress { revision: Revision(0) },
            WatchOutput::StreamProgress { revision: Revision(128) },
            WatchOutput::Canceled { watch_id: WatchId(0), revision: Revision(2) },
            WatchOutput::Compacted { watch_id: id, compact_revision: Revision(1 << 20) },
        ];
        for identity in [small, large] {
            for output in &outputs {
                let response = watch_response(output.clone(), &identity);
                assert_eq!(output.encoded_len(&identity), response.encoded_len(), "{output:?}");
            }
        }
    }

    #[test]
    fn fragments_follow_etcds_split() {
        let identity = Identity { member_id: 1, cluster_id: 2, term: Term(3) };
        let id = WatchId(4);
        let events: Vec<Event> = (0..10).map(event).collect();
        let responses = |limit| -> Vec<WatchResponse> {
            let parts = fragments(&identity, id, Revision(9), events.clone(), limit);
            parts.into_iter().map(|part| watch_response(part, &identity)).collect()
        };
        let response = WatchResponse {
            header: Some(identity.response_header(Revision(9))),
            watch_id: 4,
            events: events.clone(),
            ..Default::default()
        };
        assert_eq!(responses(1 << 20), vec![response.clone()], "small: one response");
        let parts = responses(350);
        assert!(parts.len() > 1);
        let (last, rest) = parts.split_last().unwrap();
        assert!(rest.iter().all(|p| p.fragment && p.encoded_len() < 350));
        assert!(!last.fragment);
        let sent: Vec<Event> = parts.iter().flat_map(|p| p.events.clone()).collect();
        assert_eq!(sent, response.events, "every event once, in order");
        assert!(parts.iter().all(|p| p.watch_id == 4 && p.header == response.header));
        let one = fragments(&identity, id, Revision(9), vec![event(1)], 10);
        assert_eq!(
            one,
            vec![WatchOutput::Events { watch_id: id, revision: Revision(9), events: vec![event(1)], fragment: false }],
            "a single event is never split"
        );
    }
}
