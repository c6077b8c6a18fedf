//! `dagr-engine dial-stdio`: connects this process's stdin and stdout to an engine's listener, the
//! connection helper of `stdio://` engine hosts.

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use crate::config::ListenAddr;

/// Pipes stdin/stdout to `addr` until the engine closes the connection; with `probe`, only
/// connects.
pub async fn run(addr: ListenAddr, probe: bool) -> anyhow::Result<()> {
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    match &addr {
        ListenAddr::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            if probe {
                return Ok(());
            }
            let (mut r, mut w) = s.into_split();
            pipe(&mut stdin, &mut stdout, &mut r, &mut w).await
        }
        ListenAddr::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            if probe {
                return Ok(());
            }
            let (mut r, mut w) = s.into_split();
            pipe(&mut stdin, &mut stdout, &mut r, &mut w).await
        }
    }
}

/// Copies both ways until the engine closes the connection; stdin EOF half-closes towards it.
async fn pipe<R, W>(
    stdin: &mut tokio::io::Stdin,
    stdout: &mut tokio::io::Stdout,
    from_engine: &mut R,
    to_engine: &mut W,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let upstream = async {
        tokio::io::copy(stdin, to_engine).await?;
        to_engine.shutdown().await
    };
    let downstream = async {
        tokio::io::copy(from_engine, stdout).await?;
        stdout.flush().await
    };
    tokio::pin!(upstream);
    tokio::pin!(downstream);
    tokio::select! {
        r = &mut downstream => r.context("copying from the engine")?,
        r = &mut upstream => {
            r.context("copying to the engine")?;
            (&mut downstream).await.context("copying from the engine")?;
        }
    }
    Ok(())
}
