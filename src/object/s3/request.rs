//! How one S3 call runs: on the store's own tokio runtime thread (rusoto's futures panic anywhere
//! else), answered through a flume channel so any executor can await it, and retried with backoff
//! while its failures are ones that may pass. What a failed response means is decided here, once.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use rusoto_core::RusotoError;
use rusoto_core::request::BufferedHttpResponse;

use super::S3Retry;
use crate::object::{ObjectError, ObjectResult};

/// How long a stopping store lets requests still in flight finish before its runtime drops them.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The tokio runtime of one store, on a thread of its own ("t4-s3"). It stops when dropped.
pub(super) struct S3Runtime {
    handle: tokio::runtime::Handle,
    /// Dropping it ends the thread's `block_on`, which then shuts the runtime down. The thread is
    /// not joined: a drop must not block the executor it happens on.
    _stop: flume::Sender<()>,
}

impl S3Runtime {
    pub(super) fn start() -> ObjectResult<S3Runtime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ObjectError::Fatal(format!("cannot build the S3 runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = flume::bounded::<()>(1);
        std::thread::Builder::new()
            .name("t4-s3".into())
            .spawn(move || {
                // A current-thread runtime drives spawned requests while this `block_on` runs.
                runtime.block_on(async move {
                    let _ = stopped.recv_async().await;
                });
                runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
            })
            .map_err(|e| ObjectError::Fatal(format!("cannot start the S3 runtime thread: {e}")))?;
        Ok(S3Runtime { handle, _stop: stop })
    }

    /// Lets code that builds tokio-bound values (connectors) see this runtime.
    pub(super) fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.handle.enter()
    }

    /// Runs `call` on the runtime and awaits its result from any executor (glommio, another tokio
    /// runtime, a plain `block_on`). Dropping the returned future does not cancel the request: a
    /// write may still land.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = ObjectResult<T>> + Send + 'static,
    ) -> ObjectResult<T> {
        let (reply, answer) = flume::bounded(1);
        self.handle.spawn(async move {
            let _ = reply.send(call.await);
        });
        answer
            .recv_async()
            .await
            .map_err(|_| ObjectError::Unavailable("the S3 request ended without an answer (runtime stopped)".into()))?
    }
}

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Worth another attempt: 5xx, throttling, a timeout, a broken connection or a garbled answer.
    Transient(String),
    /// The call's answer; retrying cannot change it.
    Final(ObjectError),
}

/// Runs `attempt` until it succeeds, fails for good, or `retry.attempts_max` attempts failed
/// (then [`ObjectError::Unavailable`] with the last cause). `what` names the call in messages.
pub(super) async fn with_retries<T, F, Fut>(retry: &S3Retry, what: &str, mut attempt: F) -> ObjectResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let attempts_max = retry.attempts_max.max(1);
    let mut backoff = retry.backoff_initial;
    let mut last_cause = String::new();
    for n in 1..=attempts_max {
        match tokio::time::timeout(retry.attempt_timeout, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(Failure::Final(error))) => return Err(error),
            Ok(Err(Failure::Transient(cause))) => last_cause = cause,
            Err(_) => last_cause = format!("no answer within {:?}", retry.attempt_timeout),
        }
        tracing::debug!(what, attempt = n, cause = %last_cause, "S3 request failed");
        if n < attempts_max {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(retry.backoff_max);
        }
    }
    Err(ObjectError::Unavailable(format!("{what}: {attempts_max} attempts failed; last: {last_cause}")))
}

/// What a rusoto call's error means. Callers first take out the errors that are answers for them
/// (`NoSuchKey` on a get, say); everything else lands here.
pub(super) fn failure<E: Debug>(error: RusotoError<E>, what: &str) -> Failure {
    match error {
        RusotoError::Unknown(response) => failure_of_response(&response, what),
        RusotoError::HttpDispatch(e) => Failure::Transient(format!("{what}: {e}")),
        // A truncated or garbled answer (a proxy, a dropped connection): the request may be resent.
        RusotoError::ParseError(e) => Failure::Transient(format!("{what}: unreadable response: {e}")),
        RusotoError::Credentials(e) => Failure::Final(ObjectError::Fatal(format!("{what}: credentials: {e}"))),
        RusotoError::Service(e) => Failure::Final(ObjectError::Fatal(format!("{what}: {e:?}"))),
        RusotoError::Validation(e) => Failure::Final(ObjectError::Fatal(format!("{what}: invalid request: {e}"))),
        RusotoError::Blocking => Failure::Final(ObjectError::Fatal(format!("{what}: rusoto blocking error"))),
    }
}

/// What an unsuccessful HTTP response means, by its status and S3 error code.
pub(super) fn failure_of_response(response: &BufferedHttpResponse, what: &str) -> Failure {
    let status = response.status.as_u16();
    let error = S3ErrorBody::parse(&response.body);
    let message = format!("{what}: HTTP {status} {}: {}", error.code, error.message);
    if transient(status, &error.code) {
        Failure::Transient(message)
    } else {
        Failure::Final(ObjectError::Fatal(message))
    }
}

/// Whether a response with this status and S3 code may succeed if sent again.
fn transient(status: u16, code: &str) -> bool {
    // `RequestTimeout` is a 400 that AWS documents as retryable (the upload stalled mid-body).
    status >= 500 || status == 429 || matches!(code, "SlowDown" | "RequestTimeout" | "InternalError")
}

/// The `<Code>` and `<Message>` of an S3 error document (empty when absent, e.g. on HEAD).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct S3ErrorBody {
    pub(super) code: String,
    pub(super) message: String,
}

impl S3ErrorBody {
    pub(super) fn parse(body: &[u8]) -> S3ErrorBody {
        let text = String::from_utf8_lossy(body);
        let field = |tag: &str| {
            let open = format!("<{tag}>");
            let start = text.find(&open).map(|i| i + open.len());
            let end = start.and_then(|s| text[s..].find(&format!("</{tag}>")).map(|e| s + e));
            start.zip(end).map(|(s, e)| text[s..e].to_string()).unwrap_or_default()
        };
        S3ErrorBody { code: field("Code"), message: field("Message") }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn response(status: u16, body: &str) -> BufferedHttpResponse {
        BufferedHttpResponse {
            status: status.try_into().unwrap(),
            body: body.as_bytes().to_vec().into(),
            headers: Default::default(),
        }
    }

    fn error_document(code: &str) -> String {
        format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>why</Message></Error>")
    }

    #[test]
    fn error_documents_give_their_code_and_message() {
        let body = error_document("NoSuchBucket");
        assert_eq!(
            S3ErrorBody::parse(body.as_bytes()),
            S3ErrorBody { code: "NoSuchBucket".into(), message: "why".into() }
        );
        assert_eq!(S3ErrorBody::parse(b""), S3ErrorBody::default());
        assert_eq!(S3ErrorBody::parse(b"<Error><Code>cut"), S3ErrorBody::default());
    }

    #[test]
    fn server_errors_and_throttling_are_retried_other_client_errors_are_not() {
        for (status, code) in [(500, "InternalError"), (503, "SlowDown"), (503, ""), (429, ""), (400, "RequestTimeout")]
        {
            let failure = failure_of_response(&response(status, &error_document(code)), "s3://b/k");
            assert!(matches!(failure, Failure::Transient(_)), "{status} {code}: {failure:?}");
        }
        for (status, code) in [(400, "InvalidArgument"), (403, "AccessDenied"), (403, "SignatureDoesNotMatch")] {
            match failure_of_response(&response(status, &error_document(code)), "s3://b/k") {
                Failure::Final(ObjectError::Fatal(message)) => {
                    assert!(message.contains("s3://b/k") && message.contains(code), "{message}")
                }
                other => panic!("{status} {code}: {other:?}"),
            }
        }
    }

    fn quick_retry(attempts_max: u32) -> S3Retry {
        S3Retry {
            attempts_max,
            attempt_timeout: Duration::from_millis(50),
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
        }
    }

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
    }

    #[test]
    fn transient_failures_are_retried_until_an_attempt_succeeds() {
        let attempts = AtomicU32::new(0);
        let result = block_on(with_retries(&quick_retry(5), "put", || async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0 => Err(Failure::Transient("connection reset".into())),
                1 => {
                    tokio::time::sleep(Duration::from_secs(5)).await; // outlives the attempt timeout
                    Ok("late")
                }
                _ => Ok("ok"),
            }
        }));
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn final_failures_are_not_retried() {
        let attempts = AtomicU32::new(0);
        let result: ObjectResult<()> = block_on(with_retries(&quick_retry(5), "put", || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(Failure::Final(ObjectError::PreconditionFailed("k".into())))
        }));
        assert!(matches!(result, Err(ObjectError::PreconditionFailed(_))));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn calls_give_up_after_the_last_attempt_with_its_cause() {
        let attempts = AtomicU32::new(0);
        let result: ObjectResult<()> = block_on(with_retries(&quick_retry(3), "get s3://b/k", || async {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            Err(Failure::Transient(format!("HTTP 503 SlowDown (attempt {n})")))
        }));
        match result {
            Err(ObjectError::Unavailable(message)) => {
                assert!(message.contains("get s3://b/k") && message.contains("attempt 2"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_call_is_answered_on_a_thread_without_any_runtime() {
        let runtime = S3Runtime::start().unwrap();
        let answer = futures_lite::future::block_on(runtime.run(async {
            tokio::time::sleep(Duration::from_millis(1)).await; // needs the store's runtime
            Ok(std::thread::current().name().map(str::to_string))
        }));
        assert_eq!(answer.unwrap().as_deref(), Some("t4-s3"));
    }
}
