//! [`TunnelStream`]: the engine's end of one connection through a tunnel.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::CHUNK;

/// One connection through a tunnel, as the engine holds it: reading gives the peer's bytes,
/// writing sends to it, shutting down the write side half-closes the connection on the client's
/// host, dropping the stream closes it.
///
/// Bytes move between the stream and the tunnel's relay tasks as [`Bytes`] chunks over bounded
/// queues: a write copies once (into a chunk of at most 64 KiB that the stream's message then
/// carries), a read copies once (out of a received message), and a slow side holds the other
/// back instead of growing buffers.
#[derive(Debug)]
pub struct TunnelStream {
    /// The peer's chunks; `None` from the queue is the peer's EOF.
    incoming: mpsc::Receiver<Bytes>,
    /// What is left of the chunk being read.
    pending: Bytes,
    /// Toward the peer; closed by a shutdown.
    outgoing: PollSender<Bytes>,
}

impl TunnelStream {
    /// A stream reading `incoming` and writing to `outgoing`.
    pub(crate) fn new(incoming: mpsc::Receiver<Bytes>, outgoing: mpsc::Sender<Bytes>) -> Self {
        TunnelStream {
            incoming,
            pending: Bytes::new(),
            outgoing: PollSender::new(outgoing),
        }
    }
}

/// The error of a write after a shutdown, or once the tunnel is gone.
fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the tunnel connection is closed")
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        while this.pending.is_empty() {
            match ready!(this.incoming.poll_recv(cx)) {
                Some(chunk) => this.pending = chunk,
                // EOF: nothing filled.
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(this.outgoing.poll_reserve(cx)).map_err(|_| broken_pipe())?;
        let n = buf.len().min(CHUNK);
        this.outgoing
            .send_item(Bytes::copy_from_slice(&buf[..n]))
            .map_err(|_| broken_pipe())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every accepted write is queued already.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.outgoing.abort_send();
        this.outgoing.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn reads_across_chunks_and_ends_at_eof() {
        let (to_stream, incoming) = mpsc::channel(4);
        let (outgoing, _from_stream) = mpsc::channel(4);
        let mut stream = TunnelStream::new(incoming, outgoing);
        to_stream.send(Bytes::from_static(b"hello ")).await.unwrap();
        to_stream.send(Bytes::new()).await.unwrap();
        to_stream.send(Bytes::from_static(b"world")).await.unwrap();
        drop(to_stream);
        let mut small = [0u8; 4];
        stream.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hell");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"o world");
    }

    #[tokio::test]
    async fn writes_are_chunked_and_shutdown_ends_the_queue() {
        let (_to_stream, incoming) = mpsc::channel(4);
        let (outgoing, mut from_stream) = mpsc::channel(4);
        let mut stream = TunnelStream::new(incoming, outgoing);
        let big = vec![7u8; CHUNK + 10];
        let writer = tokio::spawn(async move {
            stream.write_all(&big).await.unwrap();
            stream.shutdown().await.unwrap();
            let after = stream.write(b"late").await;
            assert_eq!(
                after.unwrap_err().kind(),
                io::ErrorKind::BrokenPipe,
                "a write after shutdown fails"
            );
        });
        let first = from_stream.recv().await.unwrap();
        let second = from_stream.recv().await.unwrap();
        assert_eq!((first.len(), second.len()), (CHUNK, 10));
        assert!(from_stream.recv().await.is_none(), "shutdown is the end");
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_write_to_a_dropped_peer_fails() {
        let (_to_stream, incoming) = mpsc::channel(4);
        let (outgoing, from_stream) = mpsc::channel(4);
        let mut stream = TunnelStream::new(incoming, outgoing);
        drop(from_stream);
        let err = stream.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
