//! Capture of a process' stdout and stderr: kept in memory up to a cap, the rest counted and
//! dropped, every chunk optionally forwarded to a progress sink.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// Which output stream a chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The process' stdout.
    Stdout,
    /// The process' stderr.
    Stderr,
}

/// A piece of process output forwarded to a progress sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// The stream it was read from.
    pub stream: OutputStream,
    /// The bytes, as read.
    pub bytes: Bytes,
}

/// What was kept of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    /// The first bytes of the stream, up to the cap.
    pub bytes: Bytes,
    /// Total length of the stream, kept or not.
    pub total_len: u64,
}

impl CapturedOutput {
    /// Whether bytes past the cap were dropped.
    pub fn truncated(&self) -> bool {
        self.total_len > self.bytes.len() as u64
    }
}

/// Reads `reader` to its end, keeping at most `cap` bytes and forwarding every chunk to `sink`
/// (a closed sink is ignored: the process still runs to completion).
pub(crate) async fn capture<R: AsyncRead + Unpin>(
    mut reader: R,
    stream: OutputStream,
    cap: usize,
    sink: Option<mpsc::Sender<OutputChunk>>,
) -> std::io::Result<CapturedOutput> {
    let mut kept = BytesMut::new();
    let mut total_len: u64 = 0;
    let mut sink = sink;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        let chunk = &buffer[..n];
        total_len += n as u64;
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..room.min(n)]);
        if let Some(sender) = &sink {
            let forwarded = OutputChunk {
                stream,
                bytes: Bytes::copy_from_slice(chunk),
            };
            if sender.send(forwarded).await.is_err() {
                sink = None;
            }
        }
    }
    Ok(CapturedOutput {
        bytes: kept.freeze(),
        total_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_up_to_the_cap_and_counts_the_rest() {
        let data = vec![b'x'; 10_000];
        let out = capture(&data[..], OutputStream::Stdout, 4096, None)
            .await
            .unwrap();
        assert_eq!(out.bytes.len(), 4096);
        assert_eq!(out.total_len, 10_000);
        assert!(out.truncated());
    }

    #[tokio::test]
    async fn short_output_is_kept_whole_and_forwarded() {
        let (tx, mut rx) = mpsc::channel(16);
        let out = capture(&b"hello\n"[..], OutputStream::Stderr, 4096, Some(tx))
            .await
            .unwrap();
        assert_eq!(&out.bytes[..], b"hello\n");
        assert!(!out.truncated());
        let chunk = rx.recv().await.unwrap();
        assert_eq!(chunk.stream, OutputStream::Stderr);
        assert_eq!(&chunk.bytes[..], b"hello\n");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_closed_sink_does_not_stop_capture() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let out = capture(&b"abc"[..], OutputStream::Stdout, 2, Some(tx))
            .await
            .unwrap();
        assert_eq!(&out.bytes[..], b"ab");
        assert_eq!(out.total_len, 3);
    }
}
