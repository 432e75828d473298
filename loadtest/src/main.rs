//! `t4-loadtest`: a load generator for any etcd v3 endpoint, T4 or etcd itself.
//!
//! It speaks only the public etcd v3 API (through `etcd-client`), so the same run can be pointed at
//! both servers and their numbers compared fairly. The workloads follow etcd's own `benchmark`
//! tool (see `loadtest/README.md`). `cli` settles the command line into a `workload::Plan`,
//! `driver` runs the request workloads (one op of each in `kv`, `txn`, `lease`, `list`), `watch` the
//! watch workloads, and `stats` turns the samples into a report. Exit status: 0 if every request
//! succeeded and every check held, 1 otherwise, 2 for a command line that describes no run.

mod cli;
mod driver;
mod kv;
mod lease;
mod list;
mod progress;
mod stats;
mod txn;
mod watch;
mod workload;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Args, Output};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("t4-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = match driver::run(&plan).await {
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
    if let Some(path) = &args.json {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| writeln!(file, "{}", report.json()));
        if let Err(e) = appended {
            eprintln!("t4-loadtest: append the report to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(e) = &report.first_error {
        eprintln!("t4-loadtest: {} errors; first: {e}", report.errors);
    }
    if report.failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
