//! A scrape: the collector that writes every part of the node's metrics in OpenMetrics text
//! (prometheus-client), and the helpers each part encodes with. Constant metrics only: values are
//! read at scrape time, nothing is registered twice.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Metrics;
use super::histogram::HistogramTotal;

impl Metrics {
    /// The metrics in OpenMetrics text. Reads the store (its size walks the data directory, and the
    /// first scrape counts its keys): call it off the executors.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Encoded {
        self.encode_grpc(&mut encoder)?;
        single(&mut encoder, "etcd_server_has_leader", "Whether a leader exists (1) or not (0).", &gauge(1))?;
        self.encode_commits(&mut encoder)?;
        self.encode_watches(&mut encoder)?;
        self.encode_durability(&mut encoder)?;
        single(
            &mut encoder,
            "t4_alarms_raised",
            "Alarms raised on this node (NOSPACE, CORRUPT).",
            &gauge(self.inner.alarms.raised().len() as i64),
        )
    }
}

pub(super) type Encoded = Result<(), std::fmt::Error>;

/// Encodes one family of a single value.
pub(super) fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &(impl EncodeMetric + MetricKind),
) -> Encoded {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.kind())?)
}

/// The type each constant metric declares.
pub(super) trait MetricKind {
    fn kind(&self) -> MetricType;
}

impl MetricKind for ConstCounter<u64> {
    fn kind(&self) -> MetricType {
        MetricType::Counter
    }
}

impl MetricKind for ConstGauge<i64> {
    fn kind(&self) -> MetricType {
        MetricType::Gauge
    }
}

impl MetricKind for ConstGauge<f64> {
    fn kind(&self) -> MetricType {
        MetricType::Gauge
    }
}

pub(super) fn counter(value: &AtomicU64) -> ConstCounter<u64> {
    ConstCounter::new(value.load(Ordering::Relaxed))
}

pub(super) fn gauge(value: i64) -> ConstGauge<i64> {
    ConstGauge::new(value)
}

/// Encodes one histogram of unlabelled observations; `scale` turns their unit into the reported one.
pub(super) fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    total: &HistogramTotal,
    scale: f64,
) -> Encoded {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    encode_histogram(&mut family, total, scale)
}

pub(super) fn encode_histogram(
    encoder: &mut prometheus_client::encoding::MetricEncoder,
    total: &HistogramTotal,
    scale: f64,
) -> Encoded {
    type NoExemplars =
        std::collections::HashMap<usize, prometheus_client::metrics::exemplar::Exemplar<Vec<(String, String)>, f64>>;
    encoder.encode_histogram(total.sum as f64 / scale, total.count(), &total.buckets(scale), None::<&NoExemplars>)
}
