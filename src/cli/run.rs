//! `t4 run`: open a node, serve until SIGINT/SIGTERM, then shut down gracefully.

use std::io::{IsTerminal, Write};
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

/// `matches` are the run subcommand's, to tell settings the user gave from defaults.
pub fn run(args: RunArgs, matches: &clap::ArgMatches) -> ExitCode {
    let filter = match tracing_subscriber::EnvFilter::try_new(&args.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("t4: error: invalid --log filter {:?}: {e}", args.log);
            return ExitCode::FAILURE;
        }
    };
    let unused = t4::ObjectStoreArgs::given_without_store(matches);
    if !unused.is_empty() {
        eprintln!(
            "t4: error: {} {} set, but no object store is: add --s3-bucket or --object-store-dir, or drop {}",
            unused.join(", "),
            if unused.len() == 1 { "is" } else { "are" },
            if unused.len() == 1 { "it" } else { "them" }
        );
        return ExitCode::FAILURE;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
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
    let listen = node.local_addr().map_or_else(|| "nowhere".to_string(), |addr| addr.to_string());
    // Scripts and tests read these lines to learn the ports (useful with port 0); the client port's
    // comes last, once both are known.
    if let Some(addr) = node.metrics_addr() {
        println!("metrics listening on {addr}");
    }
    if node.local_addr().is_some() {
        println!("listening on {listen}");
    }
    let _ = std::io::stdout().flush();
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        data_dir = %args.config.data_dir.display(),
        %listen,
        advertise = %args.config.client_urls(node.local_addr()).join(","),
        cores = args.config.cores(),
        object_store = %args.config.object_store.summary(),
        "t4 is serving the etcd v3 API"
    );
    if args.config.advertise_client_urls.is_empty() && node.local_addr().is_some_and(|addr| addr.ip().is_unspecified())
    {
        tracing::warn!(
            "serving on every interface but advertising loopback in MemberList (clients that sync their \
             endpoints from it would connect to themselves): set --advertise-client-urls to an address they can reach"
        );
    }
    // Signals arrive on a thread of their own, so the wait below can also end with a fatal error.
    let (signalled, signal) = flume::bounded(1);
    let forwarding = std::thread::Builder::new().name("t4-signals".into()).spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _ = signalled.send(signal);
        }
    });
    if let Err(e) = forwarding {
        eprintln!("t4: error: cannot start the signal thread: {e}");
        return ExitCode::FAILURE;
    }
    let stopped_by =
        futures_lite::future::block_on(futures_lite::future::or(async { Ok(signal.recv_async().await.ok()) }, async {
            Err(node.failed().await)
        }));
    let signal = match stopped_by {
        Ok(Some(SIGINT)) => "SIGINT",
        Ok(Some(SIGTERM)) => "SIGTERM",
        Ok(_) => "the end of signal handling",
        Err(fatal) => {
            // The node stops itself; `close` waits until it has, and then knows the failure's
            // cause for sure (the first report may have been a consequence of it).
            let cause = futures_lite::future::block_on(node.close()).err().unwrap_or(fatal);
            eprintln!("t4: error: {cause}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%signal, "shutting down");
    match futures_lite::future::block_on(node.close()) {
        Ok(()) => {
            tracing::info!("shutdown complete");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("t4: error during shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}
