//! What an [`S3Store`](super::S3Store) needs to know: where the objects live, who it is, and how
//! patiently it retries. There is no anonymous and no "default chain" credential: a store signs
//! every request with credentials its configuration names, or it does not open.

use std::fmt;
use std::time::Duration;

/// Region used when none is given (also what moto, MinIO and Ceph accept by default).
pub const DEFAULT_REGION: &str = "us-east-1";
/// Attempts per call, the first included, when a request fails for a reason that may pass.
pub const DEFAULT_ATTEMPTS_MAX: u32 = 5;
/// How long one attempt (request sent, response read in full) may take before it counts as failed.
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 10_000;
/// Pause after the first failed attempt; it doubles after each later one.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 50;
/// Longest pause between two attempts. With the defaults the pauses are 50, 100, 200 and 400 ms:
/// a call gives up about 0.75 s after its last timely failure (at most 5 × 10 s + 0.75 s in all).
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 1_000;

/// Where an [`S3Store`](super::S3Store) keeps its objects and how it reaches them.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket holding the objects; it must exist (the store never creates buckets).
    pub bucket: String,
    /// Folder inside the bucket: object `k` is stored as `<prefix>/k`. Surrounding `/` are ignored
    /// (`t4/` and `t4` are the same); empty stores keys at the bucket's root.
    pub prefix: String,
    /// An S3-compatible endpoint such as `http://127.0.0.1:9000` (moto, MinIO, Ceph), addressed
    /// path-style; `None` talks to AWS in `region`.
    pub endpoint: Option<String>,
    /// The region requests are signed for (with no endpoint, also the AWS region reached).
    pub region: String,
    /// Who the store is.
    pub credentials: S3Credentials,
    /// How failed requests are retried.
    pub retry: S3Retry,
}

impl S3Config {
    /// A configuration for `bucket` on AWS in `us-east-1`, at the bucket's root, with the default
    /// retries; adjust the fields for anything else.
    pub fn new(bucket: impl Into<String>, credentials: S3Credentials) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: DEFAULT_REGION.to_string(),
            credentials,
            retry: S3Retry::default(),
        }
    }
}

/// The credentials every request is signed with.
#[derive(Clone)]
pub enum S3Credentials {
    /// An access key given directly. Both parts must be non-empty.
    Static {
        /// The access key id (`AKIA...`).
        access_key_id: String,
        /// Its secret; never printed.
        secret_access_key: String,
    },
    /// A profile of the AWS shared credentials file (`~/.aws/credentials`, or the file named by
    /// `AWS_SHARED_CREDENTIALS_FILE`), read again for each request so rotated keys are picked up.
    Profile(String),
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Credentials::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .finish(),
            S3Credentials::Profile(name) => f.debug_tuple("Profile").field(name).finish(),
        }
    }
}

/// How an [`S3Store`](super::S3Store) retries. Only failures that may pass are retried: 5xx,
/// throttling (429, `SlowDown`), `RequestTimeout`, attempt timeouts and broken connections. A refused
/// precondition, a missing object or any other 4xx is the call's answer at once. The default: 5
/// attempts of at most 10 s each, with pauses of 50 ms doubling up to 1 s between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Retry {
    /// Attempts per call, the first included (at least 1).
    pub attempts_max: u32,
    /// How long one attempt may take.
    pub attempt_timeout: Duration,
    /// Pause after the first failed attempt; doubles after each later one.
    pub backoff_initial: Duration,
    /// Longest pause between two attempts.
    pub backoff_max: Duration,
}

impl Default for S3Retry {
    fn default() -> S3Retry {
        S3Retry {
            attempts_max: DEFAULT_ATTEMPTS_MAX,
            attempt_timeout: Duration::from_millis(DEFAULT_ATTEMPT_TIMEOUT_MS),
            backoff_initial: Duration::from_millis(DEFAULT_BACKOFF_INITIAL_MS),
            backoff_max: Duration::from_millis(DEFAULT_BACKOFF_MAX_MS),
        }
    }
}

/// `prefix` without surrounding `/`, refused if what is left is not a valid key path.
pub(super) fn normalize_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim_matches('/');
    if !trimmed.is_empty() && super::super::check_key(trimmed).is_err() {
        return Err(format!("invalid S3 prefix {prefix:?}: empty, `.` or `..` segments"));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_lose_surrounding_slashes_and_refuse_empty_segments() {
        assert_eq!(normalize_prefix("t4/").unwrap(), "t4");
        assert_eq!(normalize_prefix("/t4/node-1/").unwrap(), "t4/node-1");
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        assert!(normalize_prefix("a//b").is_err());
        assert!(normalize_prefix("a/../b").is_err());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let credentials = S3Credentials::Static { access_key_id: "AKID".into(), secret_access_key: "hunter2".into() };
        let shown = format!("{:?}", S3Config::new("b", credentials));
        assert!(shown.contains("AKID") && !shown.contains("hunter2"), "{shown}");
    }
}
