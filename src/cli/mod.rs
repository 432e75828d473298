//! The `t4` command line: one file (or folder) per subcommand, and the output and gRPC helpers the
//! read-only commands share.

mod grpc;
mod inspect;
mod output;
mod restore;
mod run;
mod status;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// T4: a key-value database for infrastructure state that speaks the etcd v3 API.
#[derive(Debug, Parser)]
#[command(name = "t4", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node serving the etcd v3 gRPC API (every flag can also be set as a T4_* variable).
    Run(Box<run::RunArgs>),
    /// Look inside a data directory without running a node (the directory must not be in use).
    Inspect(inspect::InspectArgs),
    /// Ask a running node (T4 or etcd) for its revision, leader, db size, version, role and members.
    Status(status::StatusArgs),
    /// Create a data directory from a snapshot of a T4 node (`etcdctl snapshot save`).
    Restore(restore::RestoreArgs),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> std::process::ExitCode {
    // The matches are kept: `run` asks them where each setting came from (a default or the user).
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Run(args) => run::run(*args, matches.subcommand_matches("run").expect("the run subcommand matched")),
        Command::Inspect(args) => inspect::run(args),
        Command::Status(args) => status::run(args),
        Command::Restore(args) => restore::run(args),
    }
}
