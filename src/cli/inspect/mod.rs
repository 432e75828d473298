//! `t4 inspect`: reads a data directory without running a node. Every command opens the directory
//! read-only (refusing one a node holds, naming its pid), prints one table or one JSON document, and
//! closes it again.

mod render;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use t4::inspect::{Inspector, latest_checkpoint};
use t4::{Error, ObjectStoreArgs};

use crate::cli::output::{Bytes, Format, print_json, print_text};
use render::CheckpointSource;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    command: InspectCommand,
}

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// Revisions, ids, term, key and lease counts, size on disk, upload watermark, last checkpoint.
    #[command(after_long_help = META_JSON_HELP)]
    Meta(MetaArgs),
    /// Keys (with create and mod revision, version, lease and value size) at a revision.
    #[command(after_long_help = LIST_JSON_HELP)]
    List(ListArgs),
    /// A key's value and metadata at a revision.
    #[command(after_long_help = GET_JSON_HELP)]
    Get(GetArgs),
    /// Every version of a key still in history, oldest first, with its revision and op.
    #[command(after_long_help = HISTORY_JSON_HELP)]
    History(HistoryArgs),
    /// Keys created, changed and deleted between two revisions.
    #[command(after_long_help = DIFF_JSON_HELP)]
    Diff(DiffArgs),
}

/// The kv object of the JSON documents.
macro_rules! kv_json_help {
    () => {
        "A kv object: key, value (not in `list`), value_bytes, create_revision, mod_revision, version, lease (an \
         integer, 0: none; tables show lease ids in hex, as etcdctl does). Keys and values are UTF-8 strings when they are valid UTF-8; otherwise a backslash shows as \\\\ \
         and other bytes as \\xNN. With --hex they are lowercase hex."
    };
}

const META_JSON_HELP: &str = "JSON (--output json): data_dir, member_id, cluster_id, term, current_revision, \
compact_revision (null: never compacted), compacted_through (null: never), key_count, lease_count, db_size_bytes, \
upload_watermark ({revision, sub} or null), last_log_position ({revision, sub} or null), object_store (the store \
read, or null when none was named: then last_checkpoint is unknown), last_checkpoint ({key, revision, sub, term, \
compact_revision, entries, tables, created_unix_ms} or null).";

const LIST_JSON_HELP: &str = concat!(
    "JSON (--output json): revision, count (keys matching in all), more (true when --limit cut the list), keys \
     (kv objects). ",
    kv_json_help!()
);

const GET_JSON_HELP: &str = concat!(
    "JSON (--output json): revision (the one read), kv (a kv object, or null if the key does not exist at that \
     revision). ",
    kv_json_help!()
);

const HISTORY_JSON_HELP: &str = concat!(
    "JSON (--output json): key, current_revision, compact_revision (null: never compacted; versions below it are \
     gone except the one reads at it still see), more (true when --limit cut the list), versions (oldest first: \
     {revision, op: \"put\" or \"delete\", kv: a kv object, null for a delete}). ",
    kv_json_help!()
);

const DIFF_JSON_HELP: &str = concat!(
    "JSON (--output json): from_revision, to_revision, more (true when --limit cut the list), changes (in key \
     order: {key, change: \"created\", \"changed\" or \"deleted\", before: the kv at --from-rev or null, after: the \
     kv at --to-rev or null}). A key deleted and created again in between is \"changed\" (its create_revision \
     differs). ",
    kv_json_help!()
);

/// Flags every inspect command takes.
#[derive(Debug, clap::Args)]
struct Common {
    /// The data directory to read. It must not be in use: stop the node first, or ask it with `t4 status`.
    #[arg(long, env = "T4_DATA_DIR", default_value = t4::defaults::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,

    /// Print a table, or one JSON document with stable field names (see --help).
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    output: Format,

    /// Show keys and values as hex, and read KEY and --prefix as hex.
    #[arg(long)]
    hex: bool,
}

#[derive(Debug, clap::Args)]
struct MetaArgs {
    #[command(flatten)]
    common: Common,

    /// Also read the newest checkpoint from this object store folder (as `t4 run --object-store-dir`).
    #[arg(long, env = "T4_OBJECT_STORE_DIR", conflicts_with = "s3_bucket")]
    object_store_dir: Option<PathBuf>,

    /// Also read the newest checkpoint from this S3 bucket (credentials as for `t4 run`).
    #[arg(long, env = "T4_S3_BUCKET")]
    s3_bucket: Option<String>,

    /// Key prefix inside the bucket.
    #[arg(long, env = "T4_S3_PREFIX", default_value = "")]
    s3_prefix: String,

    /// S3 endpoint URL for S3-compatible stores.
    #[arg(long, env = "T4_S3_ENDPOINT")]
    s3_endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "T4_S3_REGION", default_value = "us-east-1")]
    s3_region: String,

    /// Profile of the AWS shared config and credentials files.
    #[arg(long, env = "T4_S3_PROFILE")]
    s3_profile: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    common: Common,

    /// Only keys starting with this prefix (all keys by default).
    #[arg(long, default_value = "")]
    prefix: OsString,

    /// Show at most this many keys (0: all).
    #[arg(long, default_value_t = t4::defaults::DEFAULT_INSPECT_LIMIT)]
    limit: usize,

    /// Read at this revision (default: the current one; below the compact revision is refused).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    rev: Option<i64>,
}

#[derive(Debug, clap::Args)]
struct GetArgs {
    #[command(flatten)]
    common: Common,

    /// The key, byte for byte as given (or hex with --hex).
    key: OsString,

    /// Read at this revision (default: the current one).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    rev: Option<i64>,
}

#[derive(Debug, clap::Args)]
struct HistoryArgs {
    #[command(flatten)]
    common: Common,

    /// The key, byte for byte as given (or hex with --hex).
    key: OsString,

    /// Show at most this many versions, the oldest (0: all).
    #[arg(long, default_value_t = t4::defaults::DEFAULT_INSPECT_LIMIT)]
    limit: usize,
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    #[command(flatten)]
    common: Common,

    /// The earlier revision (at or above the compact revision).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    from_rev: i64,

    /// The later revision (at most the current one).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    to_rev: i64,

    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    prefix: OsString,

    /// Show at most this many changed keys, the first in key order (0: all).
    #[arg(long, default_value_t = t4::defaults::DEFAULT_INSPECT_LIMIT)]
    limit: usize,
}

/// Why an inspect command failed, as the one line it prints.
fn explain(error: Error, inspector: Option<&Inspector>, revision: Option<i64>) -> String {
    let revisions = inspector.and_then(|i| i.revisions().ok());
    match (&error, revisions, revision) {
        (Error::Compacted, Some((_, Some(compact))), Some(rev)) => {
            format!("revision {rev}: {error} (the compact revision is {compact})")
        }
        (Error::FutureRevision, Some((current, _)), Some(rev)) => {
            format!("revision {rev}: {error} (the current revision is {current})")
        }
        _ => error.to_string(),
    }
}

fn limit(n: usize) -> usize {
    if n == 0 { usize::MAX } else { n }
}

/// Runs an inspect command; prints its output or one error line.
pub fn run(args: InspectArgs) -> ExitCode {
    match run_command(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("t4 inspect: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn open(common: &Common) -> Result<Inspector, String> {
    Inspector::open(&common.data_dir).map_err(|e| e.to_string())
}

fn print(
    format: Format,
    json: impl FnOnce() -> std::io::Result<()>,
    table: impl FnOnce() -> String,
) -> Result<(), String> {
    match format {
        Format::Json => json(),
        Format::Table => print_text(&table()),
    }
    .map_err(|e| format!("cannot write the output: {e}"))
}

fn run_command(command: InspectCommand) -> Result<(), String> {
    match command {
        InspectCommand::Meta(args) => {
            let inspector = open(&args.common)?;
            let summary = inspector.summary().map_err(|e| e.to_string())?;
            let checkpoint = read_checkpoint(&args)?;
            let data_dir = args.common.data_dir.display().to_string();
            print(
                args.common.output,
                || print_json(&render::meta_json(&data_dir, &summary, &checkpoint)),
                || render::meta_table(&data_dir, &summary, &checkpoint),
            )
        }
        InspectCommand::List(args) => {
            let bytes = Bytes::new(args.common.hex);
            let prefix = bytes.parse(&args.prefix).map_err(|e| format!("--prefix: {e}"))?;
            let inspector = open(&args.common)?;
            let listing = inspector
                .list(&prefix, args.rev, limit(args.limit))
                .map_err(|e| explain(e, Some(&inspector), args.rev))?;
            print(
                args.common.output,
                || print_json(&render::list_json(&listing, bytes)),
                || render::list_table(&listing, bytes),
            )
        }
        InspectCommand::Get(args) => {
            let bytes = Bytes::new(args.common.hex);
            let key = bytes.parse(&args.key).map_err(|e| format!("KEY: {e}"))?;
            let inspector = open(&args.common)?;
            let (revision, kv) = inspector.get(&key, args.rev).map_err(|e| explain(e, Some(&inspector), args.rev))?;
            print(
                args.common.output,
                || print_json(&render::get_json(revision, kv.as_ref(), bytes)),
                || render::get_table(revision, &key, kv.as_ref(), bytes),
            )
        }
        InspectCommand::History(args) => {
            let bytes = Bytes::new(args.common.hex);
            let key = bytes.parse(&args.key).map_err(|e| format!("KEY: {e}"))?;
            let inspector = open(&args.common)?;
            let history = inspector.history(&key, limit(args.limit)).map_err(|e| e.to_string())?;
            print(
                args.common.output,
                || print_json(&render::history_json(&key, &history, bytes)),
                || render::history_table(&history, bytes),
            )
        }
        InspectCommand::Diff(args) => {
            if args.from_rev > args.to_rev {
                return Err(format!("--from-rev {} is above --to-rev {}", args.from_rev, args.to_rev));
            }
            let bytes = Bytes::new(args.common.hex);
            let prefix = bytes.parse(&args.prefix).map_err(|e| format!("--prefix: {e}"))?;
            let inspector = open(&args.common)?;
            let diff = inspector.diff(args.from_rev, args.to_rev, &prefix, limit(args.limit)).map_err(|e| {
                let rev = if matches!(e, Error::Compacted) { args.from_rev } else { args.to_rev };
                explain(e, Some(&inspector), Some(rev))
            })?;
            print(
                args.common.output,
                || print_json(&render::diff_json(&diff, bytes)),
                || render::diff_table(&diff, bytes),
            )
        }
    }
}

/// The newest checkpoint of the object store `meta` names, if it names one.
fn read_checkpoint(args: &MetaArgs) -> Result<CheckpointSource, String> {
    let store = ObjectStoreArgs {
        object_store_dir: args.object_store_dir.clone().filter(|d| !d.as_os_str().is_empty()),
        s3_bucket: args.s3_bucket.clone().filter(|b| !b.is_empty()),
        s3_prefix: args.s3_prefix.clone(),
        s3_endpoint: args.s3_endpoint.clone(),
        s3_region: args.s3_region.clone(),
        s3_profile: args.s3_profile.clone(),
        ..ObjectStoreArgs::default()
    };
    let described = match (&store.object_store_dir, &store.s3_bucket) {
        (Some(dir), _) => dir.display().to_string(),
        (None, Some(bucket)) => format!("s3://{bucket}/{}", store.s3_prefix),
        (None, None) => return Ok(CheckpointSource::NotRead),
    };
    let latest = latest_checkpoint(&store).map_err(|e| format!("reading the last checkpoint from {described}: {e}"))?;
    Ok(CheckpointSource::Read { store: described, latest })
}
