//! The report: throughput and latency percentiles from the raw samples of one run.
//!
//! Percentiles are read off the full sorted list of per-op latencies (nearest rank), not from a
//! histogram, so small runs are exact and nothing depends on bucket choices. Throughput counts
//! successful ops only, over the wall time of the timed phase (warm-up excluded). For the watch
//! workloads a sample is one event delivered to one watcher (its put→event latency), so
//! throughput is events received by all watchers together per second, from the first put to the
//! last event.

use serde_json::json;

use crate::workload::{Budget, ListTally, Outcome, Plan, TxnTally, WatchTally, Workload};

/// One run, summarised.
#[derive(Debug)]
pub struct Report {
    pub label: String,
    pub workload: Workload,
    pub endpoints: Vec<String>,
    pub clients: u32,
    pub conns: u32,
    /// `--total`, or `None` for a `--duration` run.
    pub total: Option<u64>,
    pub duration_secs: Option<f64>,
    pub warmup: Budget,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    pub read_ratio: f64,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Txn: compare-and-swap conflicts, retried (not errors).
    pub conflicts: u64,
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
    /// The txn workload's counters; `None` for the others.
    pub txn: Option<TxnTally>,
    /// The list workloads' pages and keys; `None` for the others.
    pub list: Option<ListTally>,
    /// List-hot and list: page size; list-hot: the hot keys, writers and their history.
    pub page_size: i64,
    pub hot: (u64, u32, u64),
    /// The store's revision just before and just after the timed phase.
    pub revisions: Option<(i64, i64)>,
}

impl Report {
    pub fn new(label: &str, plan: &Plan, outcome: Outcome) -> Report {
        let ok = outcome.ok();
        let mut samples = outcome.latencies_us;
        samples.sort_unstable();
        let elapsed_secs = outcome.elapsed.as_secs_f64();
        let (total, duration_secs) = match plan.stop {
            Budget::Ops(n) => (Some(n), None),
            Budget::Time(d) => (None, Some(d.as_secs_f64())),
        };
        Report {
            label: label.to_string(),
            workload: plan.workload,
            endpoints: plan.endpoints.clone(),
            clients: plan.clients,
            conns: outcome.watch.map_or(plan.conns, |w| w.conns),
            total,
            duration_secs,
            warmup: plan.warmup,
            key_size: plan.key_size,
            val_size: plan.val_size,
            key_space: plan.key_space,
            read_ratio: plan.read_ratio,
            ok,
            errors: outcome.errors,
            first_error: outcome.first_error,
            conflicts: outcome.conflicts,
            elapsed_secs,
            ops_per_sec: if elapsed_secs > 0.0 { ok as f64 / elapsed_secs } else { 0.0 },
            p50_us: percentile(&samples, 50.0),
            p90_us: percentile(&samples, 90.0),
            p99_us: percentile(&samples, 99.0),
            p999_us: percentile(&samples, 99.9),
            max_us: samples.last().copied().unwrap_or(0),
            stopped_early: outcome.stopped_early,
            watch: outcome.watch,
            txn: outcome.txn,
            list: outcome.list,
            page_size: plan.page_size,
            hot: (plan.hot_keys, plan.hot_writers, plan.hot_updates),
            revisions: outcome.revisions,
        }
    }

    /// Whether the run failed: a request failed unexpectedly, or a check did (txn conflicts and
    /// a cut-short run are not failures).
    pub fn failed(&self) -> bool {
        self.errors > 0
    }

    /// A heading line, a table of one row, and a line per detail of the workload.
    pub fn text(&self) -> String {
        let label = if self.label.is_empty() { String::new() } else { format!("[{}] ", self.label) };
        let unit = if self.watch.is_some() { "puts" } else { "ops" };
        let budget = match (self.total, self.duration_secs) {
            (Some(n), _) => format!("{n} {unit}"),
            (None, Some(secs)) => format!("{secs} s"),
            (None, None) => String::new(),
        };
        let warmup = match self.warmup {
            w if w.is_empty() => "no warm-up".to_string(),
            Budget::Ops(n) => format!("warm-up {n} {unit}"),
            Budget::Time(d) => format!("warm-up {} s", d.as_secs_f64()),
        };
        let mut s = format!(
            "{label}{} on {}: {budget}, {warmup}, key {} B, value {} B\n",
            self.workload.name(),
            self.endpoints.join(","),
            self.key_size,
            self.val_size,
        );
        let watch = self.watch.is_some();
        let txn = self.workload == Workload::Txn;
        let mut head = vec!["clients", "conns", if watch { "events" } else { "ok" }, "errors"];
        let mut row =
            vec![self.clients.to_string(), self.conns.to_string(), self.ok.to_string(), self.errors.to_string()];
        if txn {
            head.push("conflicts");
            row.push(self.conflicts.to_string());
        }
        head.extend([
            "secs",
            if watch { "events/s" } else { "ops/s" },
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
        ]);
        row.extend([
            format!("{:.3}", self.elapsed_secs),
            format!("{:.1}", self.ops_per_sec),
            self.p50_us.to_string(),
            self.p90_us.to_string(),
            self.p99_us.to_string(),
            self.p999_us.to_string(),
            self.max_us.to_string(),
        ]);
        s.push_str(&table(&head, &row));
        match self.workload {
            Workload::Mixed => s.push_str(&format!(
                "mixed: gets of {} pre-written keys with probability {}, else puts of new keys\n",
                self.key_space, self.read_ratio
            )),
            Workload::List => s.push_str(&format!(
                "list: an op is one page of {} keys of a {}-key prefix, walked at its first page's revision\n",
                self.page_size, self.key_space
            )),
            Workload::Count => {
                s.push_str(&format!("count: an op is a count_only of a {}-key prefix\n", self.key_space))
            }
            Workload::ListHot => s.push_str(&format!(
                "list-hot: an op is a whole list of {} keys in pages of {}, while {} writers update {} hot keys \
                 (each updated {} times before)\n",
                self.key_space, self.page_size, self.hot.1, self.hot.0, self.hot.2
            )),
            w if w.needs_keys() => s.push_str(&format!("gets of {} pre-written keys\n", self.key_space)),
            w if w.is_put() && self.key_space > 0 => {
                s.push_str(&format!("puts to random keys of {}\n", self.key_space));
            }
            Workload::LeaseChurn => s.push_str("an op is grant + put with the lease + revoke (timed), then a get\n"),
            _ => {}
        }
        if let Some(t) = &self.txn {
            s.push_str(&format!(
                "txn: {} counter(s) add up to {}, {} successful increments (warm-up included); {:.2} conflicts per op\n",
                t.counters,
                t.counter_sum,
                t.increments,
                self.conflicts as f64 / self.ok.max(1) as f64,
            ));
        }
        if let Some(w) = &self.watch {
            s.push_str(&format!(
                "watchers: {} on {} connection(s), {} stream(s); {} puts acknowledged, {} events expected; \
                 latencies are put->event\n",
                w.watchers,
                w.conns,
                w.streams,
                w.puts,
                w.events_expected(),
            ));
        }
        if let Some(l) = &self.list {
            s.push_str(&format!(
                "ranges: {} answered, {} keys returned ({:.0} keys/s); hot key updates meanwhile: {}\n",
                l.pages,
                l.keys_read,
                l.keys_read as f64 / self.elapsed_secs.max(1e-9),
                l.hot_puts
            ));
        }
        if self.stopped_early {
            s.push_str("stopped early: --duration-max-secs reached\n");
        }
        s
    }

    /// One JSON object, one line.
    pub fn json(&self) -> String {
        let is_txn = self.workload == Workload::Txn;
        let mut report = json!({
            "label": self.label,
            "workload": self.workload.name(),
            "endpoints": self.endpoints,
            "clients": self.clients,
            "conns": self.conns,
            "total": self.total,
            "duration_secs": self.duration_secs,
            "warmup_ops": match self.warmup { Budget::Ops(n) => Some(n), Budget::Time(_) => None },
            "warmup_secs": match self.warmup { Budget::Time(d) => Some(d.as_secs_f64()), Budget::Ops(_) => None },
            "key_size": self.key_size,
            "val_size": self.val_size,
            "key_space": self.key_space,
            "read_ratio": (self.workload == Workload::Mixed).then_some(self.read_ratio),
            "ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "conflicts": is_txn.then_some(self.conflicts),
            "elapsed_secs": self.elapsed_secs,
            "ops_per_sec": self.ops_per_sec,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "stopped_early": self.stopped_early,
            "failed": self.failed(),
            "revision_start": self.revisions.map(|r| r.0),
            "revision_end": self.revisions.map(|r| r.1),
            "watchers": self.watch.map(|w| w.watchers),
            "streams": self.watch.map(|w| w.streams),
            "puts": self.watch.map(|w| w.puts),
            "events_expected": self.watch.map(|w| w.events_expected()),
            "counters": self.txn.map(|t| t.counters),
            "increments": self.txn.map(|t| t.increments),
            "counter_sum": self.txn.map(|t| t.counter_sum),
        });
        // The list workloads' fields (apart: one json! of every field is past its recursion limit).
        let hot = (self.workload == Workload::ListHot).then_some(self.hot);
        let list = json!({
            "page_size": self.list.map(|_| self.page_size),
            "pages": self.list.map(|l| l.pages),
            "keys_read": self.list.map(|l| l.keys_read),
            "hot_keys": hot.map(|h| h.0),
            "hot_writers": hot.map(|h| h.1),
            "hot_updates": hot.map(|h| h.2),
            "hot_puts": hot.and(self.list).map(|l| l.hot_puts),
        });
        if let (Some(all), serde_json::Value::Object(list)) = (report.as_object_mut(), list) {
            all.extend(list);
        }
        report.to_string()
    }
}

/// A header and one row, each column as wide as its widest cell.
fn table(head: &[&str], row: &[String]) -> String {
    let widths: Vec<usize> = head.iter().zip(row).map(|(h, c)| h.len().max(c.len())).collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect();
        padded.join("  ") + "\n"
    };
    line(head.to_vec()) + &line(row.iter().map(String::as_str).collect())
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
    use crate::workload::tests::plan;

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

    #[test]
    fn percentiles_of_few_or_no_samples() {
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 99.9), 7);
        assert_eq!(percentile(&[1, 2], 50.0), 1);
        assert_eq!(percentile(&[1, 2], 99.0), 2);
    }

    fn watch_plan() -> Plan {
        Plan { workload: Workload::WatchFanout, stop: Budget::Ops(2), watchers: 3, streams: 2, ..plan() }
    }

    #[test]
    fn watch_reports_count_events_per_second() {
        let outcome = Outcome {
            latencies_us: vec![40, 10, 30, 20, 60, 50],
            elapsed: Duration::from_millis(500),
            watch: Some(WatchTally { watchers: 3, conns: 1, streams: 2, puts: 2, per_put: 3 }),
            ..Outcome::default()
        };
        let report = Report::new("etcd", &watch_plan(), outcome);
        assert_eq!(report.ok, 6);
        assert_eq!(report.ops_per_sec, 12.0);
        assert_eq!(report.p50_us, 30);
        assert_eq!(report.max_us, 60);
        let text = report.text();
        assert!(text.starts_with("[etcd] watch-fanout on 127.0.0.1:1: 2 puts, no warm-up"), "{text}");
        assert!(text.contains("watchers: 3 on 1 connection(s), 2 stream(s); 2 puts acknowledged, 6 events"), "{text}");
        assert!(text.contains("events/s"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["workload"], "watch-fanout");
        assert_eq!(json["watchers"], 3);
        assert_eq!(json["events_expected"], 6);
        assert_eq!(json["failed"], false);
    }

    #[test]
    fn the_table_lines_up_the_numbers_under_their_heads() {
        let outcome = Outcome {
            latencies_us: vec![100, 200, 300, 400],
            errors: 1,
            first_error: Some("boom".into()),
            elapsed: Duration::from_secs(2),
            ..Outcome::default()
        };
        let report = Report::new("t4", &Plan { workload: Workload::ParPut, clients: 4, conns: 2, ..plan() }, outcome);
        let text = report.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("[t4] par-put on 127.0.0.1:1: 10 ops, no warm-up"), "{text}");
        let head: Vec<&str> = lines[1].split_whitespace().collect();
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        let cell = |name: &str| row[head.iter().position(|h| *h == name).unwrap()];
        assert_eq!(lines[1].len(), lines[2].len(), "{text}");
        assert_eq!((cell("clients"), cell("conns"), cell("ok"), cell("errors")), ("4", "2", "4", "1"));
        assert_eq!((cell("ops/s"), cell("max_us")), ("2.0", "400"));
        assert!(!text.contains("conflicts"), "{text}");
        assert!(report.failed());
    }

    #[test]
    fn txn_reports_conflicts_and_the_counter_check() {
        let outcome = Outcome {
            latencies_us: vec![5; 10],
            conflicts: 25,
            elapsed: Duration::from_secs(1),
            txn: Some(TxnTally { counters: 1, increments: 12, counter_sum: 12 }),
            ..Outcome::default()
        };
        let report = Report::new("", &Plan { workload: Workload::Txn, key_space: 1, ..plan() }, outcome);
        assert!(!report.failed(), "conflicts are not failures");
        let text = report.text();
        assert!(text.contains("conflicts"), "{text}");
        assert!(text.contains("1 counter(s) add up to 12, 12 successful increments"), "{text}");
        assert!(text.contains("2.50 conflicts per op"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["conflicts"], 25);
        assert_eq!(json["counter_sum"], 12);
        assert!(json["watchers"].is_null());
    }

    #[test]
    fn other_reports_have_no_watch_or_txn_fields() {
        let report = Report::new("", &plan(), Outcome { latencies_us: vec![1], ..Outcome::default() });
        assert!(report.text().starts_with("seq-put on "));
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert!(json["watchers"].is_null());
        assert!(json["conflicts"].is_null());
        assert!(json["read_ratio"].is_null());
        assert_eq!(json["total"], 10);
        assert!(json["duration_secs"].is_null());
    }

    #[test]
    fn a_duration_run_reports_its_time_not_a_total() {
        let p = Plan { stop: Budget::Time(Duration::from_secs(5)), ..plan() };
        let report = Report::new("", &p, Outcome::default());
        assert!(report.text().contains(": 5 s,"), "{}", report.text());
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert!(json["total"].is_null());
        assert_eq!(json["duration_secs"], 5.0);
    }
}
