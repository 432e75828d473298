//! The `t4` binary: parses the command line and runs the chosen subcommand.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
