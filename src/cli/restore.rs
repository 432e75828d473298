//! `t4 restore --from-snapshot FILE --data-dir DIR`: a new data directory from a snapshot of a T4
//! node, as `etcdctl snapshot save` (or any client of Maintenance.Snapshot) stores it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The snapshot: a file `etcdctl snapshot save` wrote from a T4 node. It is T4's own format
    /// (the whole store, checksummed, with etcd's trailing SHA-256), not a bbolt file: etcd cannot
    /// read it, and T4 cannot read etcd's.
    #[arg(long, value_name = "FILE")]
    from_snapshot: PathBuf,

    /// The data directory to create (it must not exist, or be empty). A node started on it has the
    /// snapshot's keys, history above its compaction, leases and revisions, under a new member and
    /// cluster id.
    #[arg(long, env = "T4_DATA_DIR")]
    data_dir: PathBuf,
}

pub fn run(args: RestoreArgs) -> ExitCode {
    match t4::snapshot::restore_data_dir(&args.from_snapshot, &args.data_dir) {
        Ok(info) => {
            println!(
                "restored revision {} ({} entries, compacted at {}) from {} into {}",
                info.revision,
                info.entries,
                info.compact,
                args.from_snapshot.display(),
                args.data_dir.display()
            );
            let _ = std::io::stdout().flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("t4: error: {e}");
            ExitCode::FAILURE
        }
    }
}
