//! An object store in an S3 bucket (AWS, or any S3-compatible server addressed path-style), through
//! rusoto. Conditional writes are signed raw PUTs with `If-None-Match: *` / `If-Match`, which
//! rusoto 0.48's typed requests lack. Etags are kept without their quotes everywhere. Every request
//! runs on the store's own tokio runtime thread, so callers may await from any executor.

mod config;
mod request;

use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::StreamExt;
use rusoto_core::credential::{
    AwsCredentials, CredentialsError, ProfileProvider, ProvideAwsCredentials, StaticProvider,
};
use rusoto_core::signature::SignedRequest;
use rusoto_core::{DispatchSignedRequest, HttpClient, Region, RusotoError};
use rusoto_s3::{
    Delete, DeleteObjectRequest, DeleteObjectsRequest, GetObjectError, GetObjectRequest, ListObjectsV2Request,
    ObjectIdentifier, S3, S3Client,
};

pub use config::{S3Config, S3Credentials, S3Retry};
use request::{Failure, S3ErrorBody, S3Runtime, failure, failure_of_response, with_retries};

use super::{Object, ObjectError, ObjectResult, ObjectStore, check_key};

/// Keys one DeleteObjects request may name (S3's limit).
const DELETE_BATCH_KEYS_MAX: usize = 1000;
/// Pages one `list` reads at most (a page holds up to 1000 keys): a bound on a misbehaving server,
/// far above any real listing.
const LIST_PAGES_MAX: usize = 100_000;

/// Objects in an S3 bucket, under an optional prefix.
pub struct S3Store {
    /// What the requests need; shared with the calls running on the runtime.
    bucket: Arc<Bucket>,
    /// The runtime the requests run on; stops when the store is dropped.
    runtime: S3Runtime,
}

/// One bucket and prefix, and the clients that reach it.
struct Bucket {
    name: String,
    /// `<prefix>/`, or empty: prepended to every key.
    name_prefix: String,
    /// Typed requests (get, delete, list).
    s3: S3Client,
    /// Signs and sends the raw conditional PUTs.
    client: rusoto_core::Client,
    region: Region,
    retry: S3Retry,
}

/// What a PUT requires of the object it replaces.
#[derive(Debug, Clone)]
enum Precondition {
    None,
    /// `If-None-Match: *`
    Absent,
    /// `If-Match: "<etag>"`
    Matches(String),
}

impl S3Store {
    /// A store for `config`'s bucket. Checks the configuration and that the credentials can be
    /// read; the bucket itself is first reached by the first call.
    pub fn open(config: S3Config) -> ObjectResult<S3Store> {
        let fatal = |message: String| ObjectError::Fatal(format!("S3 bucket {:?}: {message}", config.bucket));
        if config.bucket.is_empty() {
            return Err(ObjectError::Fatal("S3 bucket name is empty".into()));
        }
        let prefix = config::normalize_prefix(&config.prefix).map_err(fatal)?;
        let region = match &config.endpoint {
            Some(endpoint) => Region::Custom { name: config.region.clone(), endpoint: endpoint.clone() },
            None => Region::from_str(&config.region).map_err(|e| fatal(format!("region {:?}: {e}", config.region)))?,
        };
        let runtime = S3Runtime::start()?;
        let (client, credentials) = {
            let _runtime = runtime.enter();
            let http = http_client().map_err(fatal)?;
            match &config.credentials {
                S3Credentials::Static { access_key_id, secret_access_key } => {
                    signing_client(StaticProvider::new_minimal(access_key_id.clone(), secret_access_key.clone()), http)
                }
                S3Credentials::Profile(profile) => {
                    let provider = ProfileProvider::with_default_credentials(profile.as_str())
                        .map_err(|e| fatal(format!("profile {profile:?}: {e}")))?;
                    signing_client(provider, http)
                }
            }
        };
        check_credentials(&runtime, credentials, &config.retry).map_err(|e| fatal(e.to_string()))?;
        let s3 = S3Client::new_with_client(client.clone(), region.clone());
        let name_prefix = if prefix.is_empty() { prefix } else { format!("{prefix}/") };
        let bucket = Bucket { name: config.bucket, name_prefix, s3, client, region, retry: config.retry };
        Ok(S3Store { bucket: Arc::new(bucket), runtime })
    }

    /// Runs `call` with the bucket on the store's runtime.
    async fn run<T, F, Fut>(&self, call: F) -> ObjectResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Bucket>) -> Fut,
        Fut: Future<Output = ObjectResult<T>> + Send + 'static,
    {
        self.runtime.run(call(self.bucket.clone())).await
    }
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("bucket", &self.bucket.name).field("prefix", &self.bucket.name_prefix).finish()
    }
}

/// rusoto's connector, built so that plain-http endpoints (moto, MinIO on loopback) work too.
fn http_client() -> Result<impl DispatchSignedRequest + Send + Sync + 'static, String> {
    // hyper-rustls panics when the system has no CA certificates at all; report that instead.
    let connector = std::panic::catch_unwind(|| {
        hyper_rustls::HttpsConnectorBuilder::new().with_native_roots().https_or_http().enable_http1().build()
    })
    .map_err(|_| "no CA certificates found (install ca-certificates)".to_string())?;
    Ok(HttpClient::from_connector(connector))
}

/// A client signing with `provider`'s credentials, and the provider (to check them at open).
fn signing_client<P: ProvideAwsCredentials + Clone + Send + Sync + 'static>(
    provider: P,
    http: impl DispatchSignedRequest + Send + Sync + 'static,
) -> (rusoto_core::Client, Arc<dyn ProvideAwsCredentials + Send + Sync>) {
    let provider = Signing(provider);
    (rusoto_core::Client::new_with(provider.clone(), http), Arc::new(provider))
}

/// Fails unless the credentials can be read now (a missing profile is an error at open, not later).
fn check_credentials(
    runtime: &S3Runtime,
    credentials: Arc<dyn ProvideAwsCredentials + Send + Sync>,
    retry: &S3Retry,
) -> ObjectResult<()> {
    let timeout = retry.attempt_timeout;
    let check = async move {
        match tokio::time::timeout(timeout, credentials.credentials()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ObjectError::Fatal(format!("credentials: {e}"))),
            Err(_) => Err(ObjectError::Fatal(format!("credentials not read within {timeout:?}"))),
        }
    };
    futures_lite::future::block_on(runtime.run(check))
}

/// A credentials provider that never yields anonymous (empty) credentials: rusoto would send such
/// requests unsigned, and the store must fail closed instead.
#[derive(Clone)]
struct Signing<P>(P);

#[async_trait::async_trait]
impl<P: ProvideAwsCredentials + Send + Sync> ProvideAwsCredentials for Signing<P> {
    async fn credentials(&self) -> Result<AwsCredentials, CredentialsError> {
        let credentials = self.0.credentials().await?;
        if credentials.aws_access_key_id().is_empty() || credentials.aws_secret_access_key().is_empty() {
            return Err(CredentialsError::new("empty access key id or secret; unsigned requests are refused"));
        }
        Ok(credentials)
    }
}

/// An etag as S3 sends it (`"abc"`, or `W/"abc"` from some proxies), without its quotes.
fn unquoted(etag: &str) -> String {
    etag.trim_start_matches("W/").trim_matches('"').to_string()
}

impl Bucket {
    /// The object's name in the bucket.
    fn object_name(&self, key: &str) -> ObjectResult<String> {
        check_key(key)?;
        Ok(format!("{}{key}", self.name_prefix))
    }

    /// `s3://bucket/name`, for messages.
    fn url(&self, name: &str) -> String {
        format!("s3://{}/{name}", self.name)
    }

    async fn put(&self, name: String, bytes: Bytes, precondition: Precondition) -> ObjectResult<String> {
        let what = format!("put {}", self.url(&name));
        with_retries(&self.retry, &what, || self.put_once(&name, bytes.clone(), &precondition, &what)).await
    }

    async fn put_once(
        &self,
        name: &str,
        bytes: Bytes,
        precondition: &Precondition,
        what: &str,
    ) -> Result<String, Failure> {
        let mut request = SignedRequest::new("PUT", "s3", &self.region, &format!("/{}/{name}", self.name));
        request.set_payload(Some(bytes));
        match precondition {
            Precondition::None => {}
            Precondition::Absent => request.add_header("If-None-Match", "*"),
            Precondition::Matches(etag) => request.add_header("If-Match", &format!("\"{etag}\"")),
        }
        let mut response =
            self.client.sign_and_dispatch(request).await.map_err(|e| failure(RusotoError::<()>::from(e), what))?;
        if response.status.is_success() {
            return match response.headers.get("etag") {
                Some(etag) => Ok(unquoted(etag)),
                None => Err(Failure::Final(ObjectError::Fatal(format!("{what}: the response has no ETag")))),
            };
        }
        let response = response.buffer().await.map_err(|e| Failure::Transient(format!("{what}: {e}")))?;
        let code = S3ErrorBody::parse(&response.body).code;
        let refused = match (response.status.as_u16(), precondition) {
            // 412: the condition does not hold. 409 ConditionalRequestConflict: a concurrent write
            // to the key won the race. Either way this write did not happen.
            (412 | 409, Precondition::Absent | Precondition::Matches(_)) => true,
            // If-Match on a missing key: AWS and moto answer 404 NoSuchKey, which is a refused precondition.
            (404, Precondition::Matches(_)) => code == "NoSuchKey",
            _ => false,
        };
        if refused {
            let status = response.status.as_u16();
            return Err(Failure::Final(ObjectError::PreconditionFailed(format!("{what}: HTTP {status} {code}"))));
        }
        Err(failure_of_response(&response, what))
    }

    async fn get(&self, name: String) -> ObjectResult<Option<Object>> {
        let what = format!("get {}", self.url(&name));
        with_retries(&self.retry, &what, || self.get_once(&name, &what)).await
    }

    async fn get_once(&self, name: &str, what: &str) -> Result<Option<Object>, Failure> {
        let request = GetObjectRequest { bucket: self.name.clone(), key: name.to_string(), ..Default::default() };
        let output = match self.s3.get_object(request).await {
            Ok(output) => output,
            Err(RusotoError::Service(GetObjectError::NoSuchKey(_))) => return Ok(None),
            Err(e) => return Err(failure(e, what)),
        };
        let Some(etag) = output.e_tag else {
            return Err(Failure::Final(ObjectError::Fatal(format!("{what}: the response has no ETag"))));
        };
        let mut bytes = Vec::new();
        if let Some(mut body) = output.body {
            while let Some(chunk) = body.next().await {
                bytes.extend_from_slice(&chunk.map_err(|e| Failure::Transient(format!("{what}: reading: {e}")))?);
            }
        }
        Ok(Some(Object { bytes, etag: unquoted(&etag) }))
    }

    async fn delete(&self, name: String) -> ObjectResult<()> {
        let what = format!("delete {}", self.url(&name));
        with_retries(&self.retry, &what, || async {
            let request = DeleteObjectRequest { bucket: self.name.clone(), key: name.clone(), ..Default::default() };
            self.s3.delete_object(request).await.map(|_| ()).map_err(|e| failure(e, &what))
        })
        .await
    }

    async fn delete_many(&self, names: Vec<String>) -> ObjectResult<()> {
        for batch in names.chunks(DELETE_BATCH_KEYS_MAX) {
            let what = format!("delete {} objects from {}", batch.len(), self.url(&batch[0]));
            with_retries(&self.retry, &what, || self.delete_batch_once(batch, &what)).await?;
        }
        Ok(())
    }

    /// One DeleteObjects request (deleting is idempotent, so a failed batch is simply sent again).
    async fn delete_batch_once(&self, names: &[String], what: &str) -> Result<(), Failure> {
        let objects = names.iter().map(|name| ObjectIdentifier { key: name.clone(), version_id: None }).collect();
        let request = DeleteObjectsRequest {
            bucket: self.name.clone(),
            delete: Delete { objects, quiet: Some(true) },
            ..Default::default()
        };
        let output = self.s3.delete_objects(request).await.map_err(|e| failure(e, what))?;
        let errors = output.errors.unwrap_or_default();
        let Some(first) = errors.first() else { return Ok(()) };
        let code = first.code.clone().unwrap_or_default();
        let message = format!(
            "{what}: {} keys not deleted, first {}: {code}: {}",
            errors.len(),
            self.url(first.key.as_deref().unwrap_or("?")),
            first.message.as_deref().unwrap_or_default()
        );
        let retryable = errors.iter().all(|e| matches!(e.code.as_deref(), Some("InternalError" | "SlowDown")));
        Err(if retryable { Failure::Transient(message) } else { Failure::Final(ObjectError::Fatal(message)) })
    }

    /// Every key under the store's prefix that starts with `prefix` and sorts after `start_after`.
    async fn list(&self, prefix: String, start_after: Option<String>) -> ObjectResult<Vec<String>> {
        let full_prefix = format!("{}{prefix}", self.name_prefix);
        let what = format!("list {}", self.url(&full_prefix));
        let mut start_after = start_after.map(|after| format!("{}{after}", self.name_prefix));
        let mut continuation_token = None;
        let mut keys = Vec::new();
        for _page in 0..LIST_PAGES_MAX {
            let request = ListObjectsV2Request {
                bucket: self.name.clone(),
                prefix: Some(full_prefix.clone()).filter(|p| !p.is_empty()),
                // S3 ignores start_after once a continuation token is given; send it on the first page only.
                start_after: start_after.take(),
                continuation_token: continuation_token.take(),
                ..Default::default()
            };
            let page = with_retries(&self.retry, &what, || async {
                self.s3.list_objects_v2(request.clone()).await.map_err(|e| failure(e, &what))
            })
            .await?;
            for object in page.contents.unwrap_or_default() {
                let name = object.key.unwrap_or_default();
                let Some(key) = name.strip_prefix(&self.name_prefix) else {
                    return Err(ObjectError::Fatal(format!("{what}: the server listed {name:?}, outside the prefix")));
                };
                keys.push(key.to_string());
            }
            if page.is_truncated != Some(true) {
                return Ok(keys);
            }
            continuation_token = page.next_continuation_token;
            if continuation_token.is_none() {
                return Err(ObjectError::Fatal(format!("{what}: a truncated page came without a continuation token")));
            }
        }
        Err(ObjectError::Fatal(format!("{what}: more than {LIST_PAGES_MAX} pages")))
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String> {
        let name = self.bucket.object_name(key)?;
        self.run(|bucket| async move { bucket.put(name, bytes.into(), Precondition::None).await }).await
    }

    /// As [`ObjectStore::put_if_absent`]. After a retried attempt (a timeout, a lost connection),
    /// `PreconditionFailed` may mean that an earlier attempt of this very call landed.
    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String> {
        let name = self.bucket.object_name(key)?;
        self.run(|bucket| async move { bucket.put(name, bytes.into(), Precondition::Absent).await }).await
    }

    /// As [`ObjectStore::put_if_match`]; the same caveat as for [`S3Store::put_if_absent`] holds.
    async fn put_if_match(&self, key: &str, bytes: Vec<u8>, etag: &str) -> ObjectResult<String> {
        let name = self.bucket.object_name(key)?;
        let precondition = Precondition::Matches(unquoted(etag));
        self.run(|bucket| async move { bucket.put(name, bytes.into(), precondition).await }).await
    }

    async fn get(&self, key: &str) -> ObjectResult<Option<Object>> {
        let name = self.bucket.object_name(key)?;
        self.run(|bucket| async move { bucket.get(name).await }).await
    }

    async fn delete(&self, key: &str) -> ObjectResult<()> {
        let name = self.bucket.object_name(key)?;
        self.run(|bucket| async move { bucket.delete(name).await }).await
    }

    async fn delete_many(&self, keys: &[String]) -> ObjectResult<()> {
        let names = keys.iter().map(|key| self.bucket.object_name(key)).collect::<ObjectResult<Vec<_>>>()?;
        if names.is_empty() {
            return Ok(());
        }
        self.run(|bucket| async move { bucket.delete_many(names).await }).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>) -> ObjectResult<Vec<String>> {
        let (prefix, start_after) = (prefix.to_string(), start_after.map(str::to_string));
        self.run(|bucket| async move { bucket.list(prefix, start_after).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: &str) -> S3Config {
        let credentials = S3Credentials::Static { access_key_id: "AK".into(), secret_access_key: "SK".into() };
        S3Config {
            prefix: prefix.into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            ..S3Config::new("bucket", credentials)
        }
    }

    #[test]
    fn object_names_join_the_prefix_and_the_key_with_one_slash() {
        for (prefix, name) in [("", "wal/a"), ("t4", "t4/wal/a"), ("t4/", "t4/wal/a"), ("/t4/node/", "t4/node/wal/a")] {
            let store = S3Store::open(config(prefix)).unwrap();
            assert_eq!(store.bucket.object_name("wal/a").unwrap(), name, "prefix {prefix:?}");
        }
        let store = S3Store::open(config("t4")).unwrap();
        assert!(matches!(store.bucket.object_name("a//b"), Err(ObjectError::Fatal(_))));
    }

    #[test]
    fn etags_lose_their_quotes() {
        assert_eq!(unquoted("\"abc\""), "abc");
        assert_eq!(unquoted("W/\"abc\""), "abc");
        assert_eq!(unquoted("abc"), "abc");
    }

    #[test]
    fn stores_without_usable_credentials_or_region_do_not_open() {
        let empty = S3Credentials::Static { access_key_id: String::new(), secret_access_key: String::new() };
        let error = S3Store::open(S3Config { credentials: empty, ..config("") }).unwrap_err();
        assert!(matches!(&error, ObjectError::Fatal(m) if m.contains("unsigned")), "{error}");
        let missing = S3Credentials::Profile("t4-test-no-such-profile".into());
        assert!(matches!(S3Store::open(S3Config { credentials: missing, ..config("") }), Err(ObjectError::Fatal(_))));
        let region = S3Config { endpoint: None, region: "mars-north-1".into(), ..config("") };
        assert!(matches!(S3Store::open(region), Err(ObjectError::Fatal(m)) if m.contains("mars-north-1")));
        assert!(matches!(S3Store::open(config("a//b")), Err(ObjectError::Fatal(_))));
    }
}
