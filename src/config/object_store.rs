//! `ObjectStoreArgs`: where and how the node makes its writes durable beyond its disk. Invariant: an
//! object storage flag given without a store is reported (a node refuses to start rather than run
//! without the store its operator meant to give it).

use std::path::PathBuf;

use super::limits::{
    DEFAULT_CHECKPOINT_INTERVAL_MIN, DEFAULT_CHECKPOINT_TABLE_BYTES, DEFAULT_WAL_SEGMENT_AGE_MS,
    DEFAULT_WAL_SEGMENT_BYTES, DEFAULT_WAL_UPLOAD_INTERVAL_MS, DEFAULT_WAL_UPLOAD_MAX_IN_FLIGHT,
    DEFAULT_WAL_UPLOAD_TIMEOUT_MS,
};

/// Where and how the node makes its writes durable beyond its disk.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ObjectStoreArgs {
    /// S3 bucket holding this node's WAL objects and checkpoints. Credentials come from
    /// T4_S3_ACCESS_KEY_ID and T4_S3_SECRET_ACCESS_KEY, or from --s3-profile; there is no fallback.
    #[arg(long, env = "T4_S3_BUCKET", conflicts_with = "object_store_dir")]
    pub s3_bucket: Option<String>,

    /// Key prefix inside the bucket (several nodes or databases can share a bucket).
    #[arg(long, env = "T4_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,

    /// S3 endpoint URL for S3-compatible stores (MinIO, Ceph, moto); addressed path-style.
    #[arg(long, env = "T4_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "T4_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// Profile of the AWS shared config and credentials files to take credentials from.
    #[arg(long, env = "T4_S3_PROFILE")]
    pub s3_profile: Option<String>,

    /// A local folder used as the object store (development and tests).
    #[arg(long, env = "T4_OBJECT_STORE_DIR")]
    pub object_store_dir: Option<PathBuf>,

    /// Acknowledge a write only once the WAL object holding it is stored (true by default when a
    /// store is set); false uploads in the background, cut by --wal-segment-bytes/--wal-segment-age-ms.
    /// Takes true/false, 1/0, yes/no or on/off.
    #[arg(long, env = "T4_WAL_SYNC_UPLOAD", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub wal_sync_upload: bool,

    /// WAL uploads in flight at once (sync upload).
    #[arg(long, env = "T4_WAL_UPLOAD_MAX_IN_FLIGHT", default_value_t = DEFAULT_WAL_UPLOAD_MAX_IN_FLIGHT)]
    pub wal_upload_max_in_flight: usize,

    /// Least milliseconds between two WAL uploads: bounds the PUT rate (and the bill); writes arriving
    /// meanwhile share the next object.
    #[arg(long, env = "T4_WAL_UPLOAD_INTERVAL_MS", default_value_t = DEFAULT_WAL_UPLOAD_INTERVAL_MS)]
    pub wal_upload_interval_ms: u64,

    /// Milliseconds a write waits for object storage before failing with "request timed out"; an
    /// outage longer than this makes the node refuse writes until the store is back (with async
    /// upload, which goes on acknowledging writes, and for checkpoints, it is reported in
    /// `Status.errors` instead).
    #[arg(long, env = "T4_WAL_UPLOAD_TIMEOUT_MS", default_value_t = DEFAULT_WAL_UPLOAD_TIMEOUT_MS)]
    pub wal_upload_timeout_ms: u64,

    /// Async upload: bytes at which a WAL object is cut.
    #[arg(long, env = "T4_WAL_SEGMENT_BYTES", default_value_t = DEFAULT_WAL_SEGMENT_BYTES)]
    pub wal_segment_bytes: usize,

    /// Async upload: age in milliseconds at which a WAL object is cut.
    #[arg(long, env = "T4_WAL_SEGMENT_AGE_MS", default_value_t = DEFAULT_WAL_SEGMENT_AGE_MS)]
    pub wal_segment_age_ms: u64,

    /// Minutes a write may go without a checkpoint covering it (0: none by time). Counted from the
    /// newest checkpoint in object storage, so restarts do not reset it.
    #[arg(long, env = "T4_CHECKPOINT_INTERVAL", default_value_t = DEFAULT_CHECKPOINT_INTERVAL_MIN)]
    pub checkpoint_interval: u64,

    /// Also checkpoint once this many revisions, or WAL objects, are newer than the newest checkpoint
    /// in object storage (0: not by count): bounds what a disk-loss restore replays. Counted from
    /// the store, so restarts do not reset it.
    #[arg(long, env = "T4_CHECKPOINT_ENTRIES", default_value_t = 0)]
    pub checkpoint_entries: u64,

    /// Expected size of a checkpoint's table objects (smaller: more sharing between checkpoints,
    /// more objects).
    #[arg(long, env = "T4_CHECKPOINT_TABLE_BYTES", default_value_t = DEFAULT_CHECKPOINT_TABLE_BYTES, hide = true)]
    pub checkpoint_table_bytes: usize,
}

impl ObjectStoreArgs {
    /// The object storage flags set (on the command line or by their `T4_*` variable) although no
    /// store is (neither `--s3-bucket` nor `--object-store-dir`): they would do nothing, so a node
    /// refuses to start rather than run without the store its operator meant to give it. Each entry
    /// names the flag and where it came from.
    pub fn given_without_store(matches: &clap::ArgMatches) -> Vec<String> {
        use clap::parser::ValueSource;
        let source = |id: &str| matches.value_source(id);
        let explicit = |id: &str| matches!(source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        if explicit("s3_bucket") || explicit("object_store_dir") {
            return Vec::new();
        }
        let args = <ObjectStoreArgs as clap::Args>::augment_args(clap::Command::new("object-store"));
        let named = |arg: &clap::Arg| match source(arg.get_id().as_str()) {
            Some(ValueSource::CommandLine) => arg.get_long().map(|long| format!("--{long}")),
            Some(ValueSource::EnvVariable) => arg.get_env().map(|env| env.to_string_lossy().into_owned()),
            _ => None,
        };
        args.get_arguments()
            .filter(|arg| !matches!(arg.get_id().as_str(), "s3_bucket" | "object_store_dir"))
            .filter_map(named)
            .collect()
    }
}

impl ObjectStoreArgs {
    /// Where the node's writes go beyond its disk, and how, for the start-up log line: `none`,
    /// `s3://bucket/prefix (endpoint …), sync upload` or `dir /path, async upload`.
    pub fn summary(&self) -> String {
        let mode = if self.wal_sync_upload { "sync upload" } else { "async upload" };
        match (&self.s3_bucket, &self.object_store_dir) {
            (Some(bucket), _) => {
                let prefix = self.s3_prefix.trim_start_matches('/');
                let endpoint = self.s3_endpoint.as_deref().unwrap_or("AWS");
                format!("s3://{bucket}/{prefix} (endpoint {endpoint}, region {}), {mode}", self.s3_region)
            }
            (None, Some(dir)) => format!("dir {}, {mode}", dir.display()),
            (None, None) => "none (local disk only)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;
    use crate::config::Config;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        config: Config,
    }

    fn given_without_store(args: &[&str]) -> Vec<String> {
        let matches = Run::command().get_matches_from(std::iter::once("t4").chain(args.iter().copied()));
        Run::from_arg_matches(&matches).expect("parses");
        ObjectStoreArgs::given_without_store(&matches)
    }

    #[test]
    fn object_store_defaults_are_not_flags_given_without_a_store() {
        assert_eq!(given_without_store(&[]), Vec::<String>::new());
        assert_eq!(given_without_store(&["--s3-region", "us-east-1"]), ["--s3-region"]);
        assert_eq!(given_without_store(&["--s3-prefix", "p", "--object-store-dir", "o"]), Vec::<String>::new());
        assert_eq!(given_without_store(&["--s3-prefix", "p", "--s3-bucket", "b"]), Vec::<String>::new());
    }
}
