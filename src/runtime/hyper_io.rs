//! The glommio ↔ hyper adapter: hyper's executor and I/O traits over glommio tasks and sockets, so
//! tonic services are served by hyper's HTTP/2 server on each core without a tokio runtime.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

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
