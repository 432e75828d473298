//! One core's counts, on its own cache lines: each core adds only to its own (no lock, no shared
//! atomic on the hot path), and a scrape sums them. Watch streams and watchers are published by
//! the core's shard; a core index beyond the node's wraps around.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;

use super::Metrics;
use super::encode::{Encoded, gauge, single};
use super::grpc::{GRPC_CODES, GRPC_METHODS};
use super::histogram::{GRPC_SECONDS, Histogram};
use crate::runtime::current_core;

/// One core's counts, on its own cache lines.
#[repr(align(128))]
#[derive(Debug)]
pub(super) struct CoreCounts {
    /// Calls answered, by method and code.
    pub(super) handled: [[AtomicU64; GRPC_CODES]; GRPC_METHODS.len()],
    /// How long calls took, by method (a stream: from its start to its end).
    pub(super) handling: [Histogram; GRPC_METHODS.len()],
    /// Watch streams open on this core's shard, and their watchers.
    watch_streams: AtomicI64,
    watchers: AtomicI64,
    /// Events not sent live because their stream's buffer was full: the stream's catch-up reads
    /// them from the log later (nothing is lost).
    events_deferred: AtomicU64,
}

impl Default for CoreCounts {
    fn default() -> Self {
        CoreCounts {
            handled: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            handling: std::array::from_fn(|_| Histogram::new(GRPC_SECONDS)),
            watch_streams: AtomicI64::new(0),
            watchers: AtomicI64::new(0),
            events_deferred: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// The calling core's counts.
    pub(super) fn core(&self) -> &CoreCounts {
        let cores = &self.inner.cores;
        &cores[current_core().unwrap_or(0) % cores.len()]
    }

    /// Publishes the calling core's shard's watch streams and watchers.
    pub fn watching(&self, streams: usize, watchers: usize) {
        let core = self.core();
        core.watch_streams.store(streams as i64, Ordering::Relaxed);
        core.watchers.store(watchers as i64, Ordering::Relaxed);
    }

    /// Counts events the calling core's shard left to a catch-up instead of sending them live.
    pub fn events_deferred(&self, events: usize) {
        self.core().events_deferred.fetch_add(events as u64, Ordering::Relaxed);
    }

    /// The watch streams and watchers the shards hold, and events they left to catch-ups.
    pub(super) fn encode_watches(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let cores = &self.inner.cores;
        let sum = |field: fn(&CoreCounts) -> i64| cores.iter().map(field).sum::<i64>();
        single(
            encoder,
            "t4_watch_streams",
            "Watch streams open.",
            &gauge(sum(|c| c.watch_streams.load(Ordering::Relaxed))),
        )?;
        single(encoder, "t4_watchers", "Watchers open.", &gauge(sum(|c| c.watchers.load(Ordering::Relaxed))))?;
        let deferred: u64 = cores.iter().map(|c| c.events_deferred.load(Ordering::Relaxed)).sum();
        single(
            encoder,
            "t4_watch_events_deferred",
            "Events not sent live because their stream's buffer was full; its catch-up sends them from the log.",
            &ConstCounter::new(deferred),
        )
    }
}
