//! [`TunnelStream`]: the engine's end of one connection through a tunnel (or of one of its own
//! listener, for a client in the engine's network namespace).

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
/// A relayed connection's bytes move between the stream and the tunnel's relay tasks as
/// [`Bytes`] chunks over bounded queues: a write copies once (into a chunk of at most 64 KiB
/// that the stream's message then carries), a read copies once (out of a received message), and
/// a slow side holds the other back instead of growing buffers. A connection of a listener the
/// engine holds itself (a client in the engine's network namespace) is the socket.
#[derive(Debug)]
pub struct TunnelStream {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Relayed(Relayed),
    Direct(tokio::net::TcpStream),
}

#[derive(Debug)]
struct Relayed {
    /// The peer's chunks; `None` from the queue is the peer's EOF.
    incoming: mpsc::Receiver<Bytes>,
    /// What is left of the chunk being read.
    pending: Bytes,
    /// Toward the peer; closed by a shutdown.
    outgoing: PollSender<Bytes>,
}

impl TunnelStream {
    /// A relayed stream reading `incoming` and writing to `outgoing`.
    pub(crate) fn new(incoming: mpsc::Receiver<Bytes>, outgoing: mpsc::Sender<Bytes>) -> Self {
        TunnelStream {
            inner: Inner::Relayed(Relayed {
                incoming,
                pending: Bytes::new(),
                outgoing: PollSender::new(outgoing),
            }),
        }
    }

    /// A connection accepted by a listener of the engine's own.
    pub(crate) fn direct(socket: tokio::net::TcpStream) -> Self {
        TunnelStream {
            inner: Inner::Direct(socket),
        }
    }
}

/// The error of a write after a shutdown, or once the tunnel is gone.
fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the tunnel connection is closed")
}

impl Relayed {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        while self.pending.is_empty() {
            match ready!(self.incoming.poll_recv(cx)) {
                Some(chunk) => self.pending = chunk,
                // EOF: nothing filled.
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending.split_to(n));
        Poll::Ready(Ok(()))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.outgoing.poll_reserve(cx)).map_err(|_| broken_pipe())?;
        let n = buf.len().min(CHUNK);
        self.outgoing
            .send_item(Bytes::copy_from_slice(&buf[..n]))
            .map_err(|_| broken_pipe())?;
        Poll::Ready(Ok(n))
    }

    fn shutdown(&mut self) {
        self.outgoing.abort_send();
        self.outgoing.close();
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Relayed(relayed) => relayed.poll_read(cx, buf),
            Inner::Direct(socket) => Pin::new(socket).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Relayed(relayed) => relayed.poll_write(cx, buf),
            Inner::Direct(socket) => Pin::new(socket).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            // Every accepted write is queued already.
            Inner::Relayed(_) => Poll::Ready(Ok(())),
            Inner::Direct(socket) => Pin::new(socket).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Relayed(relayed) => {
                relayed.shutdown();
                Poll::Ready(Ok(()))
            }
            Inner::Direct(socket) => Pin::new(socket).poll_shutdown(cx),
        }
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
