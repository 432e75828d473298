//! The `t4` command line: one file per subcommand.

mod run;

use clap::{Parser, Subcommand};

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
    Run(run::RunArgs),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run::run(args),
    }
}
