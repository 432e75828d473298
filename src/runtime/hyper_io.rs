//! The glommio ↔ hyper adapter: hyper's executor, timer and I/O traits over glommio tasks, timers
//! and sockets, so tonic services are served by hyper's HTTP/2 server on each core without a tokio
//! runtime.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

/// Spawns hyper's connection tasks on the current glommio executor (they need not be `Send`).
#[derive(Clone, Copy, Debug)]
pub struct GlommioExecutor;

impl<F> hyper::rt::Executor<F> for GlommioExecutor
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        glommio::spawn_local(future).detach();
    }
}

/// hyper's timer (its HTTP/2 keep-alive pings) on glommio's: each sleep is a task on the current
/// executor that fires it; dropping the sleep cancels the task. hyper's sleeps must be `Send`, and
/// glommio's timers are not, so the two share only thread-safe state.
#[derive(Clone, Copy, Debug)]
pub struct GlommioTimer;

impl hyper::rt::Timer for GlommioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(GlommioSleep::new(deadline))
    }
}

/// What a sleep and its timer task share.
#[derive(Default)]
struct SleepState {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// Signalled when the sleep is dropped (a permit is kept if the task is not waiting yet).
    cancelled: tokio::sync::Notify,
}

/// One of [`GlommioTimer`]'s sleeps. Must be created on an executor (hyper's connection tasks are).
struct GlommioSleep {
    state: Arc<SleepState>,
}

impl GlommioSleep {
    fn new(deadline: Instant) -> GlommioSleep {
        let state = Arc::new(SleepState::default());
        let task_state = state.clone();
        glommio::spawn_local(async move {
            let fire = async {
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                true
            };
            let cancel = async {
                task_state.cancelled.notified().await;
                false
            };
            if futures_lite::future::or(fire, cancel).await {
                task_state.fired.store(true, Ordering::Release);
                let waker = task_state.waker.lock().map(|mut w| w.take()).unwrap_or(None);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        })
        .detach();
        GlommioSleep { state }
    }
}

impl Future for GlommioSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if let Ok(mut waker) = self.state.waker.lock() {
            *waker = Some(cx.waker().clone());
        }
        // It may have fired between the check and storing the waker.
        if self.state.fired.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl hyper::rt::Sleep for GlommioSleep {}

impl Drop for GlommioSleep {
    fn drop(&mut self) {
        self.state.cancelled.notify_one();
    }
}

/// Bytes read into hyper's buffer per call at most (bounds the zeroing of uninitialised memory).
const READ_CHUNK_BYTES: usize = 16 * 1024;

pin_project_lite::pin_project! {
    /// A glommio stream seen through hyper's I/O traits.
    pub struct HyperIo<T> {
        #[pin]
        inner: T,
    }
}

impl<T> HyperIo<T> {
    pub fn new(inner: T) -> HyperIo<T> {
        HyperIo { inner }
    }
}

impl<T: AsyncRead> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: we only write initialised bytes into the cursor and advance it by what was read.
        let uninit = unsafe { buf.as_mut() };
        let n = uninit.len().min(READ_CHUNK_BYTES);
        for b in &mut uninit[..n] {
            b.write(0);
        }
        // SAFETY: the first `n` bytes were initialised just above.
        let slice = unsafe { &mut *(&mut uninit[..n] as *mut [MaybeUninit<u8>] as *mut [u8]) };
        match self.project().inner.poll_read(cx, slice) {
            Poll::Ready(Ok(read)) => {
                // SAFETY: `read` bytes of the initialised prefix now hold data.
                unsafe { buf.advance(read) };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite> hyper::rt::Write for HyperIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_close(cx)
    }
}
