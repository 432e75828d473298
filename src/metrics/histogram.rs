//! The two shapes of measurement the node keeps besides plain counters: a histogram of integer
//! observations (nanoseconds, or counts) with atomic buckets, and a per-second rate over a sliding
//! window. Both are written without locks and read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds in a second: durations are observed in nanoseconds and reported in seconds.
pub const NANOS_PER_SECOND: f64 = 1e9;

/// Prometheus' default buckets (`prometheus.DefBuckets`), which go-grpc-prometheus uses for
/// `grpc_server_handling_seconds`: 5 ms to 10 s, in nanoseconds.
pub const GRPC_SECONDS: &[u64] = &[
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// etcd's buckets for disk syncs (`ExponentialBuckets(0.001, 2, 14)`): 1 ms to 8.192 s, in
/// nanoseconds. Object-store requests use them too.
pub const DISK_SECONDS: &[u64] = &[
    1_000_000,
    2_000_000,
    4_000_000,
    8_000_000,
    16_000_000,
    32_000_000,
    64_000_000,
    128_000_000,
    256_000_000,
    512_000_000,
    1_024_000_000,
    2_048_000_000,
    4_096_000_000,
    8_192_000_000,
];

/// Powers of two from 1 to 4096: sizes of group commits (proposals per sync).
pub const POWERS_OF_TWO: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// A histogram of integer observations. `bounds` are the buckets' inclusive upper bounds, ascending;
/// one more bucket takes what lies above the last.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        debug_assert!(bounds.is_sorted(), "bucket bounds ascend");
        Histogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: AtomicU64::new(0) }
    }

    /// Records one observation of `value`.
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records one duration, in nanoseconds.
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds this histogram's counts to `total` (which must have the same bounds).
    pub fn add_to(&self, total: &mut HistogramTotal) {
        debug_assert_eq!(total.counts.len(), self.counts.len());
        for (sum, count) in total.counts.iter_mut().zip(self.counts.iter()) {
            *sum += count.load(Ordering::Relaxed);
        }
        total.sum = total.sum.wrapping_add(self.sum.load(Ordering::Relaxed));
    }

    /// This histogram's counts alone.
    pub fn total(&self) -> HistogramTotal {
        let mut total = HistogramTotal::new(self.bounds);
        self.add_to(&mut total);
        total
    }
}

/// Histograms' counts summed at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramTotal {
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative), the last one unbounded.
    pub counts: Vec<u64>,
    /// The sum of the observations, in their unit.
    pub sum: u64,
}

impl HistogramTotal {
    pub fn new(bounds: &'static [u64]) -> HistogramTotal {
        HistogramTotal { bounds, counts: vec![0; bounds.len() + 1], sum: 0 }
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The buckets as prometheus-client encodes them: (upper bound, observations in it) with bounds
    /// divided by `scale` (1e9 for nanoseconds in seconds), the last bound `f64::MAX` (`+Inf`).
    pub fn buckets(&self, scale: f64) -> Vec<(f64, u64)> {
        let bounds = self.bounds.iter().map(|bound| *bound as f64 / scale).chain([f64::MAX]);
        bounds.zip(self.counts.iter().copied()).collect()
    }
}

/// Slots of [`RateWindow`]: more than the seconds averaged, so the second being filled never
/// overwrites one still read.
const RATE_SLOTS: usize = 16;
/// Whole seconds a rate is averaged over.
pub const RATE_WINDOW_SECONDS: u64 = 10;

/// Events per second over the last [`RATE_WINDOW_SECONDS`] whole seconds, kept in one slot per second.
#[derive(Debug)]
pub struct RateWindow {
    started: Instant,
    /// Per slot: the second it counts (plus one; 0 is never used) and its count.
    slots: [(AtomicU64, AtomicU64); RATE_SLOTS],
}

impl Default for RateWindow {
    fn default() -> Self {
        RateWindow { started: Instant::now(), slots: std::array::from_fn(|_| (AtomicU64::new(0), AtomicU64::new(0))) }
    }
}

impl RateWindow {
    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs() + 1
    }

    /// Records `events` now.
    pub fn record(&self, events: u64) {
        self.record_at(Instant::now(), events);
    }

    fn record_at(&self, at: Instant, events: u64) {
        let second = self.second(at);
        let (slot_second, count) = &self.slots[second as usize % RATE_SLOTS];
        let seen = slot_second.load(Ordering::Acquire);
        // The first writer of a new second resets its slot (a writer racing it may lose its events
        // of that second: a rate, not a count).
        if seen != second && slot_second.compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            count.store(0, Ordering::Release);
        }
        count.fetch_add(events, Ordering::AcqRel);
    }

    /// The events per second over the last whole seconds before now.
    pub fn per_second(&self) -> f64 {
        self.per_second_at(Instant::now())
    }

    fn per_second_at(&self, at: Instant) -> f64 {
        let now = self.second(at);
        let first = now.saturating_sub(RATE_WINDOW_SECONDS).max(1);
        let events: u64 = self
            .slots
            .iter()
            .filter(|(second, _)| (first..now).contains(&second.load(Ordering::Acquire)))
            .map(|(_, count)| count.load(Ordering::Acquire))
            .sum();
        events as f64 / RATE_WINDOW_SECONDS as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let histogram = Histogram::new(&[10, 20]);
        for value in [0, 10, 11, 20, 21, 1_000] {
            histogram.observe(value);
        }
        let total = histogram.total();
        assert_eq!(total.counts, vec![2, 2, 2]);
        assert_eq!(total.sum, 1_062);
        assert_eq!(total.count(), 6);
        assert_eq!(total.buckets(10.0), vec![(1.0, 2), (2.0, 2), (f64::MAX, 2)]);
    }

    #[test]
    fn durations_are_observed_in_nanoseconds() {
        let histogram = Histogram::new(GRPC_SECONDS);
        histogram.observe_duration(Duration::from_millis(7));
        let total = histogram.total();
        assert_eq!(total.sum, 7_000_000);
        assert_eq!(total.counts[1], 1, "7 ms is in the 10 ms bucket");
    }

    #[test]
    fn totals_sum_histograms() {
        let (a, b) = (Histogram::new(&[5]), Histogram::new(&[5]));
        a.observe(1);
        b.observe(9);
        let mut total = HistogramTotal::new(&[5]);
        a.add_to(&mut total);
        b.add_to(&mut total);
        assert_eq!((total.counts.clone(), total.sum), (vec![1, 1], 10));
    }

    #[test]
    fn a_rate_averages_the_last_whole_seconds_and_forgets_older_ones() {
        let rate = RateWindow::default();
        let start = rate.started;
        let at = |seconds: f64| start + Duration::from_secs_f64(seconds);
        for second in 0..10 {
            rate.record_at(at(second as f64 + 0.5), 3);
        }
        // The second being filled does not count yet.
        rate.record_at(at(10.2), 100);
        assert_eq!(rate.per_second_at(at(10.5)), 3.0);
        // Twenty seconds later the window holds nothing, though slots were reused.
        assert_eq!(rate.per_second_at(at(30.5)), 0.0);
        rate.record_at(at(31.0), 20);
        assert_eq!(rate.per_second_at(at(32.0)), 2.0);
    }
}
