//! Where the engine listens ([`EngineHost`]) and how to open a byte stream to it.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::str::FromStr;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The address of an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineHost {
    /// `unix:///run/dagr.sock`
    Unix(PathBuf),
    /// `tcp://127.0.0.1:1234` (any `host:port`).
    Tcp(String),
    /// `stdio://dagr-engine dial-stdio --addr ...`: a process per connection whose stdin/stdout is
    /// the byte stream (arguments split on whitespace).
    Stdio { program: String, args: Vec<String> },
}

/// Why an engine host string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid engine host {input:?}: {reason}")]
pub struct EngineHostError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for EngineHost {
    type Err = EngineHostError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| EngineHostError {
            input: input.to_string(),
            reason,
        };
        if let Some(path) = input.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(refuse("empty socket path"));
            }
            Ok(EngineHost::Unix(PathBuf::from(path)))
        } else if let Some(addr) = input.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(EngineHost::Tcp(addr.to_string()))
                }
                _ => Err(refuse("expected tcp://HOST:PORT")),
            }
        } else if let Some(command) = input.strip_prefix("stdio://") {
            let mut words = command.split_whitespace().map(String::from);
            let program = words.next().ok_or_else(|| refuse("empty command"))?;
            Ok(EngineHost::Stdio {
                program,
                args: words.collect(),
            })
        } else {
            Err(refuse("expected unix://, tcp:// or stdio://"))
        }
    }
}

impl fmt::Display for EngineHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineHost::Unix(path) => write!(f, "unix://{}", path.display()),
            EngineHost::Tcp(addr) => write!(f, "tcp://{addr}"),
            EngineHost::Stdio { program, args } => {
                write!(f, "stdio://{program}")?;
                for arg in args {
                    write!(f, " {arg}")?;
                }
                Ok(())
            }
        }
    }
}

/// A byte stream to the engine. A concrete type, not a boxed trait object: futures generic over a
/// `dyn` IO trip rustc's higher-ranked `Send` inference, and callers spawn `connect`.
pub(crate) enum EngineStream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Stdio(Box<ChildIo>),
}

impl AsyncRead for EngineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            EngineStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            EngineStream::Stdio(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EngineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            EngineStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            EngineStream::Stdio(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_flush(cx),
            EngineStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            EngineStream::Stdio(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            EngineStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            EngineStream::Stdio(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect to engine at {host}: {source}")]
    Connect { host: String, source: io::Error },
    #[error("cannot start {program:?} for engine host {host}: {source}")]
    Spawn {
        host: String,
        program: String,
        source: io::Error,
    },
}

impl EngineHost {
    /// Opens a fresh connection. (Owned arguments to tokio's generic connects keep the future
    /// `Send` for callers that box or spawn `connect`.)
    pub(crate) async fn dial(&self) -> Result<EngineStream, DialError> {
        let connected = match self.clone() {
            EngineHost::Unix(path) => UnixStream::connect(path).await.map(EngineStream::Unix),
            EngineHost::Tcp(addr) => match TcpStream::connect(addr).await {
                Ok(stream) => stream.set_nodelay(true).map(|()| EngineStream::Tcp(stream)),
                Err(e) => Err(e),
            },
            EngineHost::Stdio { program, args } => return self.spawn(&program, &args),
        };
        connected.map_err(|source| DialError::Connect {
            host: self.to_string(),
            source,
        })
    }

    fn spawn(&self, program: &str, args: &[String]) -> Result<EngineStream, DialError> {
        let spawn = |source| DialError::Spawn {
            host: self.to_string(),
            program: program.to_string(),
            source,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn)?;
        let missing = || spawn(io::Error::other("child stdio not captured"));
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        Ok(EngineStream::Stdio(Box::new(ChildIo {
            child: Some(child),
            stdin,
            stdout,
        })))
    }
}

/// A child process's stdout (read) and stdin (write) as one stream; the child is killed and reaped
/// when this is dropped.
pub(crate) struct ChildIo {
    child: Option<Child>,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Drop for ChildIo {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.start_kill();
        // Reap it now rather than leaving a zombie until tokio's next orphan sweep.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

impl AsyncRead for ChildIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChildIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_hosts() {
        let cases = [
            (
                "unix:///run/dagr.sock",
                EngineHost::Unix("/run/dagr.sock".into()),
            ),
            (
                "tcp://127.0.0.1:1234",
                EngineHost::Tcp("127.0.0.1:1234".into()),
            ),
            ("tcp://[::1]:99", EngineHost::Tcp("[::1]:99".into())),
            (
                "stdio://dagr-engine dial-stdio --addr x",
                EngineHost::Stdio {
                    program: "dagr-engine".into(),
                    args: vec!["dial-stdio".into(), "--addr".into(), "x".into()],
                },
            ),
        ];
        for (input, want) in cases {
            let got: EngineHost = input.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, want);
            assert_eq!(got.to_string(), input);
        }
        for bad in [
            "",
            "http://x",
            "unix://",
            "tcp://host",
            "tcp://:80",
            "tcp://h:notaport",
            "stdio://  ",
        ] {
            let err = bad.parse::<EngineHost>().expect_err(bad);
            assert_eq!(err.input, bad);
            assert!(err.to_string().contains("invalid engine host"));
        }
    }
}
