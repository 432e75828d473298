//! The command line, and its settlement into a `Plan`: defaults that depend on the workload, and
//! every combination that would silently measure something else is refused.
//!
//! Flags that etcd's `benchmark` tool also has carry its names (`--endpoints`, `--clients`,
//! `--conns`, `--total`, `--key-size`, `--val-size`), so etcd users feel at home.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::workload::{Budget, Plan, Workload};

/// Timed ops when neither `--total` nor `--duration` is given.
const TOTAL_DEFAULT: u64 = 10_000;
/// The default warm-up is this fraction of the timed phase (in ops, or in time)...
const WARMUP_FRACTION: u64 = 100;
/// ... but at most this many ops ...
const WARMUP_OPS_MAX: u64 = 1_000;
/// ... or this long.
const WARMUP_TIME_MAX: Duration = Duration::from_secs(10);
/// The pre-written set of the get and mixed workloads when `--key-space` is not given.
const READ_KEY_SPACE_DEFAULT: u64 = 1_000;
/// Watch-fanout's and watch-keys' watcher connections when `--conns` is not given.
const FANOUT_CONNS_DEFAULT: u32 = 10;
/// The prefix of list and count when `--key-space` is not given.
const LIST_KEY_SPACE_DEFAULT: u64 = 10_000;
/// The prefix of list-hot when `--key-space` is not given.
const LIST_HOT_KEY_SPACE_DEFAULT: u64 = 2_000;

/// How the report is printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for a person.
    Text,
    /// One JSON object on one line, for scripts.
    Jsonl,
}

#[derive(Parser, Debug)]
#[command(name = "t4-loadtest", version, about = "Load generator for any etcd v3 endpoint (T4 or etcd)")]
pub struct Args {
    /// Comma-separated `host:port` list of the server's etcd v3 API.
    #[arg(long, env = "T4_LOADTEST_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,

    /// What to run.
    #[arg(long, env = "T4_LOADTEST_WORKLOAD", value_enum, default_value = "seq-put")]
    pub workload: Workload,

    /// Concurrent clients (seq-* and watch-fanout always use one; for watch-latency, the writers).
    #[arg(long, env = "T4_LOADTEST_CLIENTS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,

    /// Connections the clients share, client i on connection i mod conns; default one per client.
    /// For watch-fanout, the watchers' connections (default 10); not for watch-latency.
    #[arg(long, env = "T4_LOADTEST_CONNS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub conns: Option<u32>,

    /// Timed ops in all, over all clients (watch workloads: puts); default 10000.
    #[arg(long, env = "T4_LOADTEST_TOTAL", conflicts_with = "duration")]
    pub total: Option<u64>,

    /// Run the timed phase for this many seconds instead of --total ops (not for watch workloads).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Untimed warm-up of the same workload, in seconds (not for watch workloads).
    #[arg(long, value_name = "SECS", conflicts_with = "warmup_ops")]
    pub warmup: Option<f64>,

    /// Untimed warm-up of the same workload, in ops over all clients (watch workloads: puts made
    /// before the watches exist). Default: 1% of the timed phase, at most 1000 ops or 10 s.
    #[arg(long, value_name = "N")]
    pub warmup_ops: Option<u64>,

    /// Bytes in each key, prefix included (longer if the prefix and index need more).
    #[arg(long, env = "T4_LOADTEST_KEY_SIZE", default_value_t = 64)]
    pub key_size: usize,

    /// Bytes in each value (txn's counters hold decimal numbers instead).
    #[arg(long, env = "T4_LOADTEST_VAL_SIZE", default_value_t = 256)]
    pub val_size: usize,

    /// Every key starts with this.
    #[arg(long, env = "T4_LOADTEST_PREFIX", default_value = "/bench/")]
    pub prefix: String,

    /// Puts: keys drawn at random from this many (default 0: a new key per put). Gets and mixed:
    /// the keys written before the timed phase that reads draw from (default 1000). Txn: the
    /// counters (default 1: the most contention).
    #[arg(long, alias = "key-count", env = "T4_LOADTEST_KEY_SPACE")]
    pub key_space: Option<u64>,

    /// Mixed: the fraction of ops that are gets (default 0.5); the others are puts.
    #[arg(long)]
    pub read_ratio: Option<f64>,

    /// Lease-churn: the TTL asked for each lease, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    pub lease_ttl_secs: i64,

    /// Report format on stdout.
    #[arg(long, env = "T4_LOADTEST_OUTPUT", value_enum, default_value = "text")]
    pub output: Output,

    /// Also append the report as one JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// A name echoed in the report, e.g. the server under test.
    #[arg(long, env = "T4_LOADTEST_LABEL", default_value = "")]
    pub label: String,

    /// Hard cap on each phase; the run stops early and reports what was done.
    #[arg(long, env = "T4_LOADTEST_DURATION_MAX_SECS", default_value_t = 600)]
    pub duration_max_secs: u64,

    /// Per-request deadline; a request past it counts as an error. For the watch workloads, also
    /// how long a watch stream may go without a message while events are due.
    #[arg(long, env = "T4_LOADTEST_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Watchers of watch-fanout (all on `--prefix`) and of watch-keys (one key each);
    /// watch-latency has one.
    #[arg(long, env = "T4_LOADTEST_WATCHERS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub watchers: u32,

    /// Watch streams of watch-fanout in all, spread evenly over `--conns`, watchers spread evenly
    /// over them (at most one per watcher).
    #[arg(long, env = "T4_LOADTEST_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub streams: u32,

    /// Puts per second of the watch workloads, over all writers; 0 puts as fast as they go.
    #[arg(long, env = "T4_LOADTEST_PUT_RATE", default_value_t = 0)]
    pub put_rate: u64,

    /// List and list-hot: keys per page (the `limit` of each range request); default 500.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub page_size: Option<i64>,

    /// List-hot: the keys (the first of `--key-space`) the hot writers update; default 200.
    #[arg(long)]
    pub hot_keys: Option<u64>,

    /// List-hot: clients updating the hot keys while the others list; default 8.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub hot_writers: Option<u32>,

    /// List-hot: untimed updates of each hot key before the timed phase, the history every list
    /// crosses; default 0.
    #[arg(long)]
    pub hot_updates: Option<u64>,
}

impl Args {
    /// The plan these flags describe, or why they do not describe one.
    pub fn plan(&self) -> Result<Plan, String> {
        let workload = self.workload;
        let name = workload.name();
        let duration_max = Duration::from_secs(self.duration_max_secs);
        let stop = match (self.total, self.duration) {
            (Some(_), Some(_)) => return Err("give --total or --duration, not both".into()),
            (_, Some(_)) if workload.is_watch() => {
                return Err(format!("{name} needs a number of puts: give --total, not --duration"));
            }
            (_, Some(secs)) => Budget::Time(seconds("--duration", secs, false)?),
            (Some(0), None) => return Err("--total must be at least 1".into()),
            (total, None) => Budget::Ops(total.unwrap_or(TOTAL_DEFAULT)),
        };
        if let Budget::Time(d) = stop
            && d > duration_max
        {
            return Err(format!(
                "--duration {} s is past --duration-max-secs {}",
                d.as_secs_f64(),
                self.duration_max_secs
            ));
        }
        let warmup = match (self.warmup, self.warmup_ops) {
            (Some(_), Some(_)) => return Err("give --warmup or --warmup-ops, not both".into()),
            (Some(_), None) if workload.is_watch() => {
                return Err(format!("{name} warms up by a number of puts: give --warmup-ops, not --warmup"));
            }
            (Some(secs), None) => Budget::Time(seconds("--warmup", secs, true)?),
            (None, Some(ops)) => Budget::Ops(ops),
            (None, None) => default_warmup(stop),
        };

        let clients = if workload.is_sequential() { 1 } else { self.clients };
        let conns = match workload {
            Workload::WatchLatency if self.conns.is_some() => {
                return Err("watch-latency has one watcher connection and one per writer: drop --conns".into());
            }
            Workload::WatchLatency => 1,
            Workload::WatchFanout | Workload::WatchKeys => self.conns.unwrap_or(FANOUT_CONNS_DEFAULT),
            w if w.is_sequential() => 1,
            _ => match self.conns {
                Some(conns) if conns > clients => {
                    return Err(format!("--conns {conns} is more than --clients {clients}: some would stay idle"));
                }
                conns => conns.unwrap_or(clients),
            },
        };

        let key_space = match (workload, self.key_space) {
            (w, key_space) if w.is_put() => key_space.unwrap_or(0),
            (w, Some(0)) if w.needs_keys() => return Err(format!("{name} reads: --key-space must be at least 1")),
            (Workload::List | Workload::Count, key_space) => key_space.unwrap_or(LIST_KEY_SPACE_DEFAULT),
            (Workload::ListHot, key_space) => key_space.unwrap_or(LIST_HOT_KEY_SPACE_DEFAULT),
            (w, key_space) if w.needs_keys() => key_space.unwrap_or(READ_KEY_SPACE_DEFAULT),
            (Workload::Txn, Some(0)) => return Err("txn needs at least one counter: --key-space >= 1".into()),
            (Workload::Txn, key_space) => key_space.unwrap_or(1),
            (_, Some(_)) => return Err(format!("--key-space does not apply to {name}: it writes a new key per op")),
            (_, None) => 0,
        };
        let read_ratio = match (workload, self.read_ratio) {
            (Workload::Mixed, Some(r)) if !(0.0..=1.0).contains(&r) => {
                return Err(format!("--read-ratio {r} is not between 0 and 1"));
            }
            (Workload::Mixed, r) => r.unwrap_or(0.5),
            (_, Some(_)) => return Err(format!("--read-ratio applies to mixed only, not {name}")),
            (_, None) => 0.0,
        };

        if workload == Workload::WatchKeys && self.val_size < 8 {
            return Err("watch-keys puts the put's number in the first 8 bytes of each value: --val-size >= 8".into());
        }
        let page_size = match (workload, self.page_size) {
            (Workload::List | Workload::ListHot, page_size) => page_size.unwrap_or(500),
            (_, Some(_)) => return Err(format!("--page-size applies to list and list-hot, not {name}")),
            (_, None) => 0,
        };
        let hot = (self.hot_keys, self.hot_writers, self.hot_updates);
        let (hot_keys, hot_writers, hot_updates) = match (workload, hot) {
            (Workload::ListHot, (Some(0), _, _)) => return Err("list-hot needs --hot-keys of at least 1".into()),
            (Workload::ListHot, (Some(n), _, _)) if n > key_space => {
                return Err(format!("--hot-keys {n} is more than the --key-space {key_space} keys listed"));
            }
            (Workload::ListHot, (keys, writers, updates)) => {
                (keys.unwrap_or(200.min(key_space)), writers.unwrap_or(8), updates.unwrap_or(0))
            }
            (_, (None, None, None)) => (0, 0, 0),
            _ => return Err(format!("--hot-keys, --hot-writers and --hot-updates apply to list-hot, not {name}")),
        };

        Ok(Plan {
            endpoints: self.endpoints.clone(),
            workload,
            clients,
            conns,
            stop,
            warmup,
            key_size: self.key_size,
            val_size: self.val_size,
            prefix: self.prefix.clone(),
            key_space,
            read_ratio,
            lease_ttl_secs: self.lease_ttl_secs,
            duration_max,
            request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
            // watch-latency: one watcher on a connection of its own.
            watchers: if workload == Workload::WatchLatency { 1 } else { self.watchers },
            streams: if workload == Workload::WatchLatency { 1 } else { self.streams },
            put_rate: self.put_rate,
            page_size,
            hot_keys,
            hot_writers,
            hot_updates,
        })
    }
}

/// 1% of the timed phase, at most `WARMUP_OPS_MAX` ops or `WARMUP_TIME_MAX`.
fn default_warmup(stop: Budget) -> Budget {
    match stop {
        Budget::Ops(n) => Budget::Ops((n / WARMUP_FRACTION).min(WARMUP_OPS_MAX)),
        Budget::Time(d) => Budget::Time((d / WARMUP_FRACTION as u32).min(WARMUP_TIME_MAX)),
    }
}

/// `secs` of flag `flag` as a duration: finite, not negative, and above zero unless `zero_ok`.
fn seconds(flag: &str, secs: f64, zero_ok: bool) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if zero_ok || !d.is_zero() => Ok(d),
        _ => Err(format!("{flag} {secs} is not a number of seconds{}", if zero_ok { "" } else { " above 0" })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &str) -> Result<Plan, String> {
        let args = Args::try_parse_from(format!("t4-loadtest {args}").split_whitespace()).map_err(|e| e.to_string())?;
        args.plan()
    }

    #[test]
    fn defaults_are_10k_ops_with_a_1_percent_warm_up() {
        let p = plan("").unwrap();
        assert_eq!(p.workload, Workload::SeqPut);
        assert_eq!(p.stop, Budget::Ops(10_000));
        assert_eq!(p.warmup, Budget::Ops(100));
        assert_eq!((p.key_size, p.val_size, p.key_space), (64, 256, 0));
    }

    #[test]
    fn the_default_warm_up_is_capped() {
        assert_eq!(plan("--total 1000000").unwrap().warmup, Budget::Ops(1000));
        assert_eq!(plan("--total 50").unwrap().warmup, Budget::Ops(0));
        assert_eq!(plan("--duration 30").unwrap().warmup, Budget::Time(Duration::from_millis(300)));
        assert_eq!(plan("--duration 1500 --duration-max-secs 2000").unwrap().warmup, Budget::Time(WARMUP_TIME_MAX));
        assert_eq!(plan("--warmup-ops 0").unwrap().warmup, Budget::Ops(0));
        assert_eq!(plan("--warmup 2.5").unwrap().warmup, Budget::Time(Duration::from_millis(2500)));
    }

    #[test]
    fn total_and_duration_exclude_each_other() {
        assert!(plan("--total 10 --duration 5").is_err());
        assert!(plan("--warmup 1 --warmup-ops 5").is_err());
        assert_eq!(plan("--duration 5").unwrap().stop, Budget::Time(Duration::from_secs(5)));
        assert!(plan("--total 0").unwrap_err().contains("at least 1"));
        assert!(plan("--duration 0").unwrap_err().contains("above 0"));
        assert!(plan("--duration -1").is_err());
        assert!(plan("--duration 700").unwrap_err().contains("--duration-max-secs"));
    }

    #[test]
    fn watch_workloads_count_puts_not_time() {
        assert!(plan("--workload watch-latency --duration 5").unwrap_err().contains("--total"));
        assert!(plan("--workload watch-fanout --warmup 1").unwrap_err().contains("--warmup-ops"));
        assert!(plan("--workload watch-latency --conns 2").is_err());
        let p = plan("--workload watch-fanout").unwrap();
        assert_eq!((p.clients, p.conns, p.watchers), (1, 10, 1000));
    }

    #[test]
    fn conns_default_to_one_per_client_and_never_exceed_them() {
        let p = plan("--workload par-put --clients 16").unwrap();
        assert_eq!((p.clients, p.conns), (16, 16));
        let p = plan("--workload par-put --clients 256 --conns 16").unwrap();
        assert_eq!((p.clients, p.conns), (256, 16));
        assert!(plan("--workload par-get --clients 4 --conns 8").unwrap_err().contains("idle"));
        let p = plan("--workload seq-put --clients 16 --conns 8").unwrap();
        assert_eq!((p.clients, p.conns), (1, 1));
    }

    #[test]
    fn key_space_defaults_by_workload() {
        assert_eq!(plan("--workload par-put --key-space 100").unwrap().key_space, 100);
        assert_eq!(plan("--workload seq-get").unwrap().key_space, 1000);
        assert_eq!(plan("--workload mixed --key-count 50").unwrap().key_space, 50);
        assert_eq!(plan("--workload txn").unwrap().key_space, 1);
        assert_eq!(plan("--workload txn --key-space 8").unwrap().key_space, 8);
        assert!(plan("--workload txn --key-space 0").is_err());
        assert!(plan("--workload par-get --key-space 0").is_err());
        assert!(plan("--workload lease-churn --key-space 5").unwrap_err().contains("does not apply"));
        assert!(plan("--workload watch-fanout --key-space 5").is_err());
    }

    #[test]
    fn read_ratio_is_for_mixed_and_a_probability() {
        assert_eq!(plan("--workload mixed").unwrap().read_ratio, 0.5);
        assert_eq!(plan("--workload mixed --read-ratio 0.9").unwrap().read_ratio, 0.9);
        assert_eq!(plan("--workload mixed --read-ratio 1").unwrap().read_ratio, 1.0);
        assert!(plan("--workload mixed --read-ratio 1.5").is_err());
        assert!(plan("--workload mixed --read-ratio NaN").is_err());
        assert!(plan("--workload par-put --read-ratio 0.5").unwrap_err().contains("mixed only"));
    }

    #[test]
    fn mixed_runs_with_a_single_client() {
        let p = plan("--workload mixed --clients 1").unwrap();
        assert_eq!((p.clients, p.conns), (1, 1));
    }

    #[test]
    fn list_workloads_default_to_their_prefix_sizes() {
        let p = plan("--workload list --clients 4").unwrap();
        assert_eq!((p.key_space, p.page_size, p.clients), (10_000, 500, 4));
        assert_eq!(plan("--workload count").unwrap().key_space, 10_000);
        let p = plan("--workload list-hot").unwrap();
        assert_eq!((p.key_space, p.hot_keys, p.hot_writers, p.hot_updates), (2_000, 200, 8, 0));
        let p = plan("--workload list-hot --key-space 50 --hot-updates 3").unwrap();
        assert_eq!((p.hot_keys, p.hot_updates), (50, 3));
    }

    #[test]
    fn list_flags_are_refused_where_they_mean_nothing() {
        assert!(plan("--workload count --page-size 10").unwrap_err().contains("--page-size"));
        assert!(plan("--workload list --page-size 0").is_err());
        assert!(plan("--workload list --hot-keys 5").unwrap_err().contains("list-hot"));
        assert!(plan("--workload par-put --hot-writers 2").is_err());
        assert!(plan("--workload list-hot --hot-keys 0").is_err());
        assert!(plan("--workload list-hot --key-space 10 --hot-keys 11").unwrap_err().contains("more than"));
        assert!(plan("--workload list --key-space 0").is_err());
    }

    #[test]
    fn watch_keys_has_writers_and_watcher_connections() {
        let p = plan("--workload watch-keys --clients 2").unwrap();
        assert_eq!((p.clients, p.conns, p.watchers, p.streams), (2, 10, 1000, 100));
        assert!(plan("--workload watch-keys --duration 3").is_err());
        assert!(plan("--workload watch-keys --val-size 4").unwrap_err().contains("--val-size"));
    }

    #[test]
    fn lease_ttl_must_be_positive() {
        assert_eq!(plan("--workload lease-churn").unwrap().lease_ttl_secs, 60);
        assert!(plan("--workload lease-churn --lease-ttl-secs 0").is_err());
    }
}
