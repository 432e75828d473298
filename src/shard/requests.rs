//! A watch stream's requests: opening the stream, the task that reads its requests into the shard's
//! mailbox, and create, cancel and progress fed to the stream's state machine. Invariants: a stream's
//! requests reach the shard in the order its client sent them, each after the groups already queued;
//! the reading task ends when the stream does.

use futures_lite::StreamExt;

use super::actor::ShardMessage;
use super::outbox::Outbox;
use super::stream_io::StreamRequest;
use super::sync::{Limits, StreamSync};
use super::watch::{StreamId, WatchStream};
use super::{Shard, WatchRequests};
use crate::actor::Mailbox;
use crate::config::WATCH_STREAM_BUFFER_BYTES;
use crate::error::Error;

impl Shard {
    /// Serves a new stream: its state machine, and a task reading its requests.
    pub(super) fn open_stream(&mut self, requests: WatchRequests, outbox: Outbox) {
        if self.stopped {
            outbox.fail(Error::Closed);
            return;
        }
        let id = self.next_stream_id;
        self.next_stream_id += 1;
        let limits = Limits { buffer_bytes: WATCH_STREAM_BUFFER_BYTES, fragment_bytes: self.context.fragment_bytes };
        let sync = StreamSync::new(limits, self.context.store.identity());
        let (stream, stopped) = WatchStream::new(outbox, sync);
        self.streams.insert(id, stream);
        self.publish_watching();
        glommio::spawn_local(read_requests(id, requests, stopped, self.mailbox.clone())).detach();
    }

    /// Feeds one request of `stream` to its state machine.
    pub(super) fn handle_request(&mut self, stream_id: StreamId, request: StreamRequest) {
        let now = self.now(stream_id);
        let Some(stream) = self.streams.get_mut(&stream_id) else { return };
        let effects = match request {
            StreamRequest::Create(create) => stream.sync.create(&create, now),
            StreamRequest::Cancel(watch_id) => stream.sync.cancel(watch_id, now),
            StreamRequest::Progress => stream.sync.progress_requested(now),
        };
        self.carry_out(stream_id, effects);
        self.publish_watching();
    }

    /// A stream whose requests broke ends with their error (the etcd layer answers with their status,
    /// as etcd ends it with grpc-go's; closing it without one would report OK).
    pub(super) fn stream_broken(&mut self, stream_id: StreamId, error: Error) {
        if let Some(stream) = self.streams.get(&stream_id) {
            stream.outbox.fail(error);
            self.close_stream(stream_id);
        }
    }
}

/// Reads one stream's requests into the shard's mailbox until the client stops sending or the
/// stream ends (`stopped` disconnects).
async fn read_requests(
    stream: StreamId,
    mut requests: WatchRequests,
    stopped: flume::Receiver<()>,
    shard: Mailbox<ShardMessage>,
) {
    loop {
        let next = async { Some(requests.next().await) };
        let stop = async {
            let _ = stopped.recv_async().await;
            None
        };
        let Some(next) = futures_lite::future::or(stop, next).await else { return };
        let message = match next {
            Some(Ok(request)) => ShardMessage::StreamRequest { stream, request },
            Some(Err(error)) => ShardMessage::StreamBroken { stream, error },
            // A client that closes its sending side keeps its watches, as with etcd; the periodic
            // tick notices when it also stops listening.
            None => return,
        };
        let broken = matches!(message, ShardMessage::StreamBroken { .. });
        if shard.tell(message).await.is_err() || broken {
            return;
        }
    }
}
