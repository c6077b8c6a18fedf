//! [`WatchedIo`]: a byte stream that reports the moment its connection ends and can be closed
//! from outside ([`CloseHandle`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// Asks a [`WatchedIo`] to fail its reads and writes, which ends the connection using it.
#[derive(Debug, Default)]
pub(crate) struct CloseHandle {
    requested: AtomicBool,
    waker: AtomicWaker,
}

impl CloseHandle {
    pub(crate) fn close(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

/// Wraps an IO and flips a watch flag to `true` on read EOF, on a read or write error, on a close
/// request and on drop.
pub(crate) struct WatchedIo<T> {
    inner: T,
    closed: watch::Sender<bool>,
    close: Arc<CloseHandle>,
}

impl<T> WatchedIo<T> {
    pub(crate) fn new(inner: T) -> (Self, watch::Receiver<bool>, Arc<CloseHandle>) {
        let (closed, receiver) = watch::channel(false);
        let close = Arc::new(CloseHandle::default());
        (
            WatchedIo {
                inner,
                closed,
                close: close.clone(),
            },
            receiver,
            close,
        )
    }

    fn signal(&self) {
        self.closed.send_replace(true);
    }

    /// Registers for close requests; `Some(error)` once one was made.
    fn close_requested(&self, cx: &Context<'_>) -> Option<io::Error> {
        self.close.waker.register(cx.waker());
        if self.close.requested.load(Ordering::SeqCst) {
            self.signal();
            Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "attachables connection closed by the engine",
            ))
        } else {
            None
        }
    }
}

impl<T> Drop for WatchedIo<T> {
    fn drop(&mut self) {
        self.signal();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(err) = self.close_requested(cx) {
            return Poll::Ready(Err(err));
        }
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) if wanted && buf.filled().len() == before => self.signal(),
            Poll::Ready(Err(_)) => self.signal(),
            _ => {}
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.close_requested(cx) {
            return Poll::Ready(Err(err));
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(_)) = &result {
            self.signal();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Err(_)) = &result {
            self.signal();
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Err(_)) = &result {
            self.signal();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
