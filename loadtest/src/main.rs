//! `t4-loadtest`: a load generator for any etcd v3 endpoint, T4 or etcd itself.
//!
//! It speaks only the public etcd v3 API (through `etcd-client`), so the same run can be pointed at
//! both servers and their numbers compared fairly. The workloads follow etcd's own `benchmark`
//! tool: sequential and parallel puts of distinct keys, gets of random existing keys, a mix, and
//! the latency and fan-out of watch events. This file is the command line; `workload` drives the
//! requests (`watch` the watch workloads) and `stats` turns the samples into a report.

mod stats;
mod watch;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::workload::Workload;

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A few human-readable lines.
    Text,
    /// One JSON object on one line, for scripts.
    Jsonl,
}

#[derive(Parser, Debug)]
#[command(name = "t4-loadtest", version, about = "Load generator for any etcd v3 endpoint (T4 or etcd)")]
struct Args {
    /// Comma-separated `host:port` list of the server's etcd v3 API.
    #[arg(long, env = "T4_LOADTEST_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,

    /// What to run.
    #[arg(long, env = "T4_LOADTEST_WORKLOAD", value_enum, default_value = "seq-put")]
    workload: Workload,

    /// Concurrent workers, each with its own client connection (seq-* and watch-fanout always use
    /// one; for watch-latency, the writers).
    #[arg(long, env = "T4_LOADTEST_CLIENTS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    clients: u32,

    /// Timed operations in all, over all workers (for the watch workloads, puts).
    #[arg(long, env = "T4_LOADTEST_TOTAL", default_value_t = 10_000)]
    total: u64,

    /// Bytes in each key, prefix included (longer if the prefix and index need more).
    #[arg(long, env = "T4_LOADTEST_KEY_SIZE", default_value_t = 64)]
    key_size: usize,

    /// Bytes in each value.
    #[arg(long, env = "T4_LOADTEST_VAL_SIZE", default_value_t = 256)]
    val_size: usize,

    /// Every key starts with this.
    #[arg(long, env = "T4_LOADTEST_PREFIX", default_value = "/bench/")]
    prefix: String,

    /// Keys written (untimed) before the get and mixed workloads start.
    #[arg(long, env = "T4_LOADTEST_KEY_COUNT", default_value_t = 1000)]
    key_count: u64,

    /// Report format.
    #[arg(long, env = "T4_LOADTEST_OUTPUT", value_enum, default_value = "text")]
    output: Output,

    /// A name echoed in the report, e.g. the server under test.
    #[arg(long, env = "T4_LOADTEST_LABEL", default_value = "")]
    label: String,

    /// Hard cap on the timed phase; the run stops early and reports what was done.
    #[arg(long, env = "T4_LOADTEST_DURATION_MAX_SECS", default_value_t = 600)]
    duration_max_secs: u64,

    /// Per-request deadline; a request past it counts as an error. For the watch workloads, also
    /// how long a watch stream may go without a message while events are due.
    #[arg(long, env = "T4_LOADTEST_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    request_timeout_secs: u64,

    /// Watchers of watch-fanout, all on `--prefix` (watch-latency has one).
    #[arg(long, env = "T4_LOADTEST_WATCHERS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    watchers: u32,

    /// Connections the watch-fanout watchers share (at most one per stream).
    #[arg(long, env = "T4_LOADTEST_CONNS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=4096))]
    conns: u32,

    /// Watch streams of watch-fanout in all, spread evenly over `--conns`, watchers spread evenly
    /// over them (at most one per watcher).
    #[arg(long, env = "T4_LOADTEST_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    streams: u32,

    /// Puts per second of the watch workloads, over all writers; 0 puts as fast as they go.
    #[arg(long, env = "T4_LOADTEST_PUT_RATE", default_value_t = 0)]
    put_rate: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.key_count == 0 && matches!(args.workload, Workload::SeqGet | Workload::ParGet | Workload::Mixed) {
        eprintln!("t4-loadtest: --key-count must be at least 1 for {:?}", args.workload);
        return ExitCode::from(2);
    }
    if args.workload == Workload::Mixed && args.clients < 2 {
        eprintln!("t4-loadtest: mixed needs --clients >= 2 (half writers, half readers)");
        return ExitCode::from(2);
    }
    let plan = workload::Plan {
        endpoints: args.endpoints.clone(),
        workload: args.workload,
        clients: if args.workload.is_sequential() { 1 } else { args.clients },
        total: args.total,
        key_size: args.key_size,
        val_size: args.val_size,
        prefix: args.prefix.clone(),
        key_count: args.key_count,
        duration_max: Duration::from_secs(args.duration_max_secs),
        request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
        // watch-latency: one watcher on a connection of its own.
        watchers: if args.workload == Workload::WatchLatency { 1 } else { args.watchers },
        conns: if args.workload == Workload::WatchLatency { 1 } else { args.conns },
        streams: if args.workload == Workload::WatchLatency { 1 } else { args.streams },
        put_rate: args.put_rate,
    };
    let outcome = match workload::run(&plan).await {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("t4-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = stats::Report::new(&args.label, &plan, outcome);
    match args.output {
        Output::Text => print!("{}", report.text()),
        Output::Jsonl => println!("{}", report.json()),
    }
    if let Some(e) = &report.first_error {
        eprintln!("t4-loadtest: {} errors; first: {e}", report.errors);
    }
    // A watch run is also a check: one watcher short of an event fails it.
    let failed = if plan.workload.is_watch() { report.errors > 0 } else { report.ok == 0 && report.errors > 0 };
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
