//! What a shard sends on one watch stream, on its way to the client (the etcd layer makes each output
//! a response as the client takes it). The shard queues without ever waiting; the client drains at
//! its own pace. The bytes of the responses queued are counted so the shard can stop feeding a
//! stream that does not keep up (its watchers then fall behind and catch up from the log): memory
//! per stream stays near the budget, and a slow client never slows the shard. A stream that ends
//! with an error ends with the crate's `Error`; the etcd layer turns it into a status.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_lite::Stream;
use tokio::sync::Notify;

use super::stream_io::WatchOutput;
use crate::error::Error;

/// What a watch stream yields.
pub type WatchItem = Result<WatchOutput, Error>;

/// The shard's end of a stream's queue.
#[derive(Debug)]
pub struct Outbox {
    queue: flume::Sender<(usize, WatchItem)>,
    /// Encoded bytes queued and not yet taken by the client.
    queued_bytes: Arc<AtomicUsize>,
    /// Signalled whenever the client takes a response.
    drained: Arc<Notify>,
}

/// The client's end: the response stream tonic sends.
pub struct OutboxStream {
    queue: flume::r#async::RecvStream<'static, (usize, WatchItem)>,
    queued_bytes: Arc<AtomicUsize>,
    drained: Arc<Notify>,
}

impl Outbox {
    /// A new, empty queue.
    pub fn new() -> (Outbox, OutboxStream) {
        // Unbounded: what is queued is bounded by the shard's byte budget instead (events), or by
        // the client's own requests (control responses).
        let (tx, rx) = flume::unbounded();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let drained = Arc::new(Notify::new());
        let outbox = Outbox { queue: tx, queued_bytes: queued_bytes.clone(), drained: drained.clone() };
        (outbox, OutboxStream { queue: rx.into_stream(), queued_bytes, drained })
    }

    /// Queues `output`, whose response is `bytes` long; false if the client is gone.
    pub fn push(&self, output: WatchOutput, bytes: usize) -> bool {
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.queue.send((bytes, Ok(output))).is_err() {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Ends the stream with `error`.
    pub fn fail(&self, error: Error) {
        let _ = self.queue.send((0, Err(error)));
    }

    /// Encoded bytes the client has not taken yet.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Whether the client has gone away.
    pub fn is_closed(&self) -> bool {
        self.queue.is_disconnected()
    }

    /// Signalled whenever the client takes a response (a permit is kept if nobody waits).
    pub fn drained(&self) -> Arc<Notify> {
        self.drained.clone()
    }
}

impl Stream for OutboxStream {
    type Item = WatchItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchItem>> {
        match Pin::new(&mut self.queue).poll_next(cx) {
            Poll::Ready(Some((bytes, item))) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.drained.notify_one();
                Poll::Ready(Some(item))
            }
            other => other.map(|item| item.map(|(_, item)| item)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Revision;
    use crate::ids::WatchId;
    use futures_lite::StreamExt;

    #[test]
    fn queued_bytes_follow_what_the_client_has_not_taken() {
        let (outbox, mut stream) = Outbox::new();
        let response = WatchOutput::Created { watch_id: WatchId(3), revision: Revision(0) };
        let bytes = 6;
        assert!(outbox.push(response.clone(), bytes));
        assert!(outbox.push(response.clone(), bytes));
        assert_eq!(outbox.queued_bytes(), 2 * bytes);
        let taken = futures_lite::future::block_on(stream.next()).unwrap().unwrap();
        assert_eq!(taken, response);
        assert_eq!(outbox.queued_bytes(), bytes);
        futures_lite::future::block_on(outbox.drained().notified()); // a take happened: resolves at once
        drop(stream);
        assert!(outbox.is_closed());
        assert!(!outbox.push(response, bytes), "pushing to a gone client reports it");
    }
}
