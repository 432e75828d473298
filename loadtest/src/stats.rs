//! The report: throughput and latency percentiles from the raw samples of one run.
//!
//! Percentiles are read off the full sorted list of per-request latencies (nearest rank), not
//! from a histogram, so small runs are exact and nothing depends on bucket choices. Throughput
//! counts successful requests only, over the wall time of the timed phase. For the watch
//! workloads a sample is one event delivered to one watcher (its put→event latency), so
//! throughput is events received by all watchers together per second, from the first put to the
//! last event.

use serde_json::json;

use crate::workload::{Outcome, Plan, WatchTally};

/// One run, summarised.
#[derive(Debug)]
pub struct Report {
    pub label: String,
    pub workload: &'static str,
    pub endpoints: Vec<String>,
    pub clients: u32,
    pub total: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed_secs: f64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub stopped_early: bool,
    /// The watch workloads' shape; `None` for the others.
    pub watch: Option<WatchTally>,
}

impl Report {
    pub fn new(label: &str, plan: &Plan, outcome: Outcome) -> Report {
        let mut samples = outcome.latencies_us;
        samples.sort_unstable();
        let elapsed_secs = outcome.elapsed.as_secs_f64();
        let ok = samples.len() as u64;
        Report {
            label: label.to_string(),
            workload: plan.workload.name(),
            endpoints: plan.endpoints.clone(),
            clients: plan.clients,
            total: plan.total,
            key_size: plan.key_size,
            val_size: plan.val_size,
            ok,
            errors: outcome.errors,
            first_error: outcome.first_error,
            elapsed_secs,
            ops_per_sec: if elapsed_secs > 0.0 { ok as f64 / elapsed_secs } else { 0.0 },
            p50_us: percentile(&samples, 50.0),
            p90_us: percentile(&samples, 90.0),
            p99_us: percentile(&samples, 99.0),
            p999_us: percentile(&samples, 99.9),
            max_us: samples.last().copied().unwrap_or(0),
            stopped_early: outcome.stopped_early,
            watch: outcome.watch,
        }
    }

    /// A few lines for a person.
    pub fn text(&self) -> String {
        let label = if self.label.is_empty() { String::new() } else { format!("[{}] ", self.label) };
        if let Some(watch) = &self.watch {
            return self.watch_text(&label, watch);
        }
        let mut s = format!(
            "{label}{} on {} with {} client(s), key {} B, value {} B\n\
             ops: {} ok, {} errors of {} in {:.3} s = {:.1} ops/s\n\
             latency us: p50 {} p90 {} p99 {} p999 {} max {}\n",
            self.workload,
            self.endpoints.join(","),
            self.clients,
            self.key_size,
            self.val_size,
            self.ok,
            self.errors,
            self.total,
            self.elapsed_secs,
            self.ops_per_sec,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
        );
        if self.stopped_early {
            s.push_str("stopped early: --duration-max-secs reached\n");
        }
        s
    }

    /// The watch workloads' lines: events rather than requests.
    fn watch_text(&self, label: &str, watch: &WatchTally) -> String {
        let mut s = format!(
            "{label}{} on {} with {} writer(s), key {} B, value {} B\n\
             watchers: {} on {} connection(s), {} stream(s); {} of {} puts acknowledged\n\
             events: {} ok of {} expected, {} errors, in {:.3} s = {:.1} events/s\n\
             put->event latency us: p50 {} p90 {} p99 {} p999 {} max {}\n",
            self.workload,
            self.endpoints.join(","),
            self.clients,
            self.key_size,
            self.val_size,
            watch.watchers,
            watch.conns,
            watch.streams,
            watch.puts,
            self.total,
            self.ok,
            watch.events_expected(),
            self.errors,
            self.elapsed_secs,
            self.ops_per_sec,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
        );
        if self.stopped_early {
            s.push_str("stopped early: --duration-max-secs reached\n");
        }
        s
    }

    /// One JSON object, one line.
    pub fn json(&self) -> String {
        json!({
            "label": self.label,
            "workload": self.workload,
            "endpoints": self.endpoints,
            "clients": self.clients,
            "total": self.total,
            "key_size": self.key_size,
            "val_size": self.val_size,
            "ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_secs": self.elapsed_secs,
            "ops_per_sec": self.ops_per_sec,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "stopped_early": self.stopped_early,
            "watchers": self.watch.map(|w| w.watchers),
            "conns": self.watch.map(|w| w.conns),
            "streams": self.watch.map(|w| w.streams),
            "puts": self.watch.map(|w| w.puts),
            "events_expected": self.watch.map(|w| w.events_expected()),
        })
        .to_string()
    }
}

/// Nearest-rank percentile `p` (0..=100) of `sorted`; 0 for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The epsilon keeps float noise (0.999 * 1000 = 999.0000000000001) from skipping a rank.
    let rank = (p / 100.0 * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::workload::Workload;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 50.0), 500);
        assert_eq!(percentile(&samples, 90.0), 900);
        assert_eq!(percentile(&samples, 99.0), 990);
        assert_eq!(percentile(&samples, 99.9), 999);
        assert_eq!(percentile(&samples, 100.0), 1000);
        assert_eq!(percentile(&samples, 0.0), 1);
    }

    fn watch_plan() -> Plan {
        Plan {
            endpoints: vec!["127.0.0.1:1".into()],
            workload: Workload::WatchFanout,
            clients: 1,
            total: 2,
            key_size: 16,
            val_size: 8,
            prefix: "/bench/".into(),
            key_count: 0,
            duration_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            watchers: 3,
            conns: 1,
            streams: 2,
            put_rate: 0,
        }
    }

    #[test]
    fn watch_reports_count_events_per_second() {
        let outcome = Outcome {
            latencies_us: vec![40, 10, 30, 20, 60, 50],
            elapsed: Duration::from_millis(500),
            watch: Some(WatchTally { watchers: 3, conns: 1, streams: 2, puts: 2 }),
            ..Outcome::default()
        };
        let report = Report::new("etcd", &watch_plan(), outcome);
        assert_eq!(report.ok, 6);
        assert_eq!(report.ops_per_sec, 12.0);
        assert_eq!(report.p50_us, 30);
        assert_eq!(report.max_us, 60);
        let text = report.text();
        assert!(text.contains("watchers: 3 on 1 connection(s), 2 stream(s); 2 of 2 puts"), "{text}");
        assert!(text.contains("events: 6 ok of 6 expected, 0 errors"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["workload"], "watch-fanout");
        assert_eq!(json["watchers"], 3);
        assert_eq!(json["events_expected"], 6);
    }

    #[test]
    fn other_reports_have_no_watch_fields() {
        let plan = Plan { workload: Workload::SeqPut, ..watch_plan() };
        let report = Report::new("", &plan, Outcome { latencies_us: vec![1], ..Outcome::default() });
        assert!(report.text().starts_with("seq-put on "));
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert!(json["watchers"].is_null());
    }

    #[test]
    fn percentiles_of_few_or_no_samples() {
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 99.9), 7);
        assert_eq!(percentile(&[1, 2], 50.0), 1);
        assert_eq!(percentile(&[1, 2], 99.0), 2);
    }
}
