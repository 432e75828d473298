//! `t4 run`: open a node, serve until SIGINT/SIGTERM, then shut down gracefully.

use std::io::Write;
use std::process::ExitCode;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: t4::Config,

    /// Log filter (tracing's env-filter syntax, e.g. `info` or `t4=debug`).
    #[arg(long, env = "T4_LOG", default_value = "info,lsm_tree=warn,fjall=warn")]
    log: String,
}

pub fn run(args: RunArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    // Fault points named in FAILPOINTS (e.g. `store-commit=panic`): compiled in only for the tests'
    // builds (the `fail` dev-dependency's `failpoints` feature); a no-op in every other build.
    let _fault_points = fail::FailScenario::setup();

    // Everything the node creates (data dir, fjall's files, the lock, a `dir` object store) is the
    // owner's alone, as etcd's 0700/0600: a store's contents are as sensitive as its API.
    // SAFETY: umask(2) only sets the process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    // Register the handlers before starting, so an early signal still shuts down cleanly.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("t4: error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let node = match t4::Node::open(args.config.clone()) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("t4: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = node.local_addr() {
        // Scripts and tests read this line to learn the port (useful with `--listen 127.0.0.1:0`).
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
    }
    tracing::info!(
        data_dir = %args.config.data_dir.display(),
        listen = ?node.local_addr(),
        cores = args.config.cores(),
        "t4 is serving the etcd v3 API"
    );
    let signal = signals.forever().next();
    tracing::info!(?signal, "shutting down");
    match futures_lite::future::block_on(node.close()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("t4: error during shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}
