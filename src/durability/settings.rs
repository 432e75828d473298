//! How a node uses its object store (from its `ObjectStoreArgs`), and opening the store they name.
//! Invariant: S3 credentials come from the environment or a named profile, never from a default
//! chain; an empty value counts as unset.

use std::sync::Arc;
use std::time::Duration;

use crate::config::ObjectStoreArgs;
use crate::error::{DurabilityError, Result};
use crate::object::{DirStore, ObjectStore, S3Config, S3Credentials, S3Store};

/// How the node uses its object store.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sync_upload: bool,
    pub max_in_flight: usize,
    pub min_interval: Duration,
    pub wait_max: Duration,
    pub segment_bytes: usize,
    pub segment_age: Duration,
    /// Checkpoint when the oldest write the newest checkpoint lacks is this old.
    pub checkpoint_interval: Option<Duration>,
    /// Checkpoint when this many revisions, or WAL objects, are newer than the newest checkpoint.
    pub checkpoint_entries: Option<u64>,
    /// Expected size of a checkpoint table object.
    pub table_bytes: usize,
}

impl Settings {
    pub fn from_args(args: &ObjectStoreArgs) -> Settings {
        Settings {
            sync_upload: args.wal_sync_upload,
            max_in_flight: args.wal_upload_max_in_flight.max(1),
            min_interval: Duration::from_millis(args.wal_upload_interval_ms),
            wait_max: Duration::from_millis(args.wal_upload_timeout_ms.max(1)),
            segment_bytes: args.wal_segment_bytes.max(1),
            segment_age: Duration::from_millis(args.wal_segment_age_ms.max(1)),
            checkpoint_interval: (args.checkpoint_interval > 0)
                .then(|| Duration::from_secs(args.checkpoint_interval.saturating_mul(60))),
            checkpoint_entries: (args.checkpoint_entries > 0).then_some(args.checkpoint_entries),
            table_bytes: args.checkpoint_table_bytes.max(1024),
        }
    }
}

/// The object store the arguments name, if any: a local folder, or S3 (credentials from the
/// environment or a profile, never a default chain).
pub fn open_object_store(args: &ObjectStoreArgs) -> Result<Option<Arc<dyn ObjectStore>>> {
    if let Some(dir) = &args.object_store_dir {
        let store = DirStore::open(dir).map_err(DurabilityError::object("object store dir"))?;
        return Ok(Some(Arc::new(store)));
    }
    // An empty value (`T4_S3_BUCKET=` in an environment file) is unset.
    let Some(bucket) = args.s3_bucket.as_ref().filter(|b| !b.is_empty()) else { return Ok(None) };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let keys = (env("T4_S3_ACCESS_KEY_ID"), env("T4_S3_SECRET_ACCESS_KEY"));
    // An empty profile (`T4_S3_PROFILE=` in an environment file) is unset, as empty keys are.
    let profile = args.s3_profile.as_ref().filter(|p| !p.is_empty());
    let credentials = match (profile, keys) {
        (Some(_), (Some(_), _) | (_, Some(_))) => {
            return Err(DurabilityError::Credentials(
                "S3 credentials: both --s3-profile and T4_S3_ACCESS_KEY_ID/T4_S3_SECRET_ACCESS_KEY are set; choose one",
            )
            .into());
        }
        (Some(profile), _) => S3Credentials::Profile(profile.clone()),
        (None, (Some(access_key_id), Some(secret_access_key))) => {
            S3Credentials::Static { access_key_id, secret_access_key }
        }
        (None, (Some(_), None) | (None, Some(_))) => {
            return Err(DurabilityError::Credentials(
                "S3 credentials: set both T4_S3_ACCESS_KEY_ID and T4_S3_SECRET_ACCESS_KEY",
            )
            .into());
        }
        (None, (None, None)) => {
            return Err(DurabilityError::Credentials(
                "S3 credentials missing: set T4_S3_ACCESS_KEY_ID and T4_S3_SECRET_ACCESS_KEY, or --s3-profile \
                 (T4 never falls back to anonymous or default-chain credentials)",
            )
            .into());
        }
    };
    let mut config = S3Config::new(bucket.clone(), credentials);
    config.prefix = args.s3_prefix.clone();
    config.endpoint = args.s3_endpoint.clone().filter(|e| !e.is_empty());
    config.region = args.s3_region.clone();
    let store = S3Store::open(config).map_err(DurabilityError::object("S3 store"))?;
    Ok(Some(Arc::new(store)))
}
