//! The terminal attachable, both halves: the engine runs an interactive process and the client
//! carries it to its user's terminal (`dagr.terminal.v1.Terminal/Session`, a bidirectional
//! stream).
//!
//! - Client half: a [`TerminalProvider`] (set in [`crate::HostProviders::terminal`]) is asked
//!   for a session with the stream of the process's [`TerminalOutput`] and returns the stream
//!   of the user's [`TerminalInput`], its first item being the user's size. One session at a
//!   time per client: a second one is refused while the first runs.
//! - Engine half: [`crate::AttachablesClient::open_terminal`] starts a session and returns a
//!   [`RemoteTerminal`]: the user's starting size, a [`TerminalReader`] of input and a
//!   [`TerminalWriter`] for output and the exit.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::AttachError;
use crate::proto::terminal::terminal_server::Terminal;
use crate::proto::terminal::{
    EngineMessage, Exit, UserMessage, WindowSize, engine_message, user_message,
};

/// What the user sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalInput {
    /// Keystrokes.
    Data(Bytes),
    /// The user's terminal size, in columns and rows.
    Resize { cols: u16, rows: u16 },
}

/// What the engine sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalOutput {
    /// Bytes the process wrote.
    Data(Bytes),
    /// The process ended with `code` (`-1` with an `error` when it could not run or was
    /// stopped). Last item.
    Exit { code: i32, error: String },
}

/// The user's side of terminal sessions, implemented by clients (e.g. over their own stdin and
/// stdout).
pub trait TerminalProvider: Send + Sync + std::fmt::Debug + 'static {
    /// A session starts: `output` yields what the process writes, then its exit, then ends.
    /// Returns the user's input; its first item must be a [`TerminalInput::Resize`], and it
    /// should stay open until the exit arrives (closing it earlier ends the process). Fails
    /// when the user's terminal cannot be set up (it is not readable, no signal handler, ...).
    fn open(
        &self,
        output: mpsc::Receiver<TerminalOutput>,
    ) -> std::io::Result<mpsc::Receiver<TerminalInput>>;
}

fn clamp(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Serves `Terminal/Session` with a provider, one session at a time.
#[derive(Debug, Clone)]
pub(crate) struct TerminalService {
    provider: Arc<dyn TerminalProvider>,
    busy: Arc<AtomicBool>,
}

impl TerminalService {
    pub(crate) fn new(provider: Arc<dyn TerminalProvider>) -> Self {
        TerminalService {
            provider,
            busy: Arc::default(),
        }
    }
}

/// Clears the busy flag when the session's response stream is dropped.
struct SessionSlot(Arc<AtomicBool>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

type UserStream = Pin<Box<dyn Stream<Item = Result<UserMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Terminal for TerminalService {
    type SessionStream = UserStream;

    async fn session(
        &self,
        request: Request<Streaming<EngineMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(Status::failed_precondition(
                "a terminal session is already open on this client",
            ));
        }
        let slot = SessionSlot(self.busy.clone());
        let (output_tx, output_rx) = mpsc::channel(64);
        let input = self
            .provider
            .open(output_rx)
            .map_err(|e| Status::unavailable(format!("the user's terminal: {e}")))?;
        let mut engine = request.into_inner();
        let forward = async move {
            while let Some(Ok(message)) = engine.next().await {
                let item = match message.item {
                    Some(engine_message::Item::Output(bytes)) => TerminalOutput::Data(bytes.into()),
                    Some(engine_message::Item::Exit(Exit { code, error })) => {
                        let _ = output_tx.send(TerminalOutput::Exit { code, error }).await;
                        break;
                    }
                    None => continue,
                };
                if output_tx.send(item).await.is_err() {
                    break;
                }
            }
        };
        tokio::spawn(forward);
        let stream = ReceiverStream::new(input).map(move |item| {
            // Keeps the session slot as long as the stream lives.
            let _held = &slot;
            Ok(UserMessage {
                item: Some(match item {
                    TerminalInput::Data(bytes) => user_message::Item::Input(bytes.to_vec()),
                    TerminalInput::Resize { cols, rows } => {
                        user_message::Item::Resize(WindowSize {
                            cols: cols.into(),
                            rows: rows.into(),
                        })
                    }
                }),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A terminal session opened on a client (engine half).
#[derive(Debug)]
pub struct RemoteTerminal {
    /// The user's terminal size when the session started (columns, rows).
    pub size: (u16, u16),
    /// The user's input.
    pub reader: TerminalReader,
    /// The process's output and exit.
    pub writer: TerminalWriter,
}

/// Reads the user's input of a [`RemoteTerminal`].
#[derive(Debug)]
pub struct TerminalReader {
    input: Streaming<UserMessage>,
}

impl TerminalReader {
    /// The next input; `None` once the client ended its stream (the user went away).
    pub async fn next(&mut self) -> Option<TerminalInput> {
        loop {
            let message = self.input.next().await?.ok()?;
            match message.item {
                Some(user_message::Item::Input(bytes)) => {
                    return Some(TerminalInput::Data(bytes.into()));
                }
                Some(user_message::Item::Resize(size)) => {
                    return Some(TerminalInput::Resize {
                        cols: clamp(size.cols),
                        rows: clamp(size.rows),
                    });
                }
                None => continue,
            }
        }
    }
}

/// Sends the process's output and exit to the user of a [`RemoteTerminal`].
#[derive(Debug, Clone)]
pub struct TerminalWriter {
    output: mpsc::Sender<EngineMessage>,
}

impl TerminalWriter {
    /// Sends output; `false` once the session is gone.
    pub async fn output(&self, bytes: Bytes) -> bool {
        let message = EngineMessage {
            item: Some(engine_message::Item::Output(bytes.to_vec())),
        };
        self.output.send(message).await.is_ok()
    }

    /// Sends the exit, the session's last message.
    pub async fn exit(self, code: i32, error: String) {
        let message = EngineMessage {
            item: Some(engine_message::Item::Exit(Exit { code, error })),
        };
        let _ = self.output.send(message).await;
    }
}

/// How long a new session waits for the client's first message (its size).
const FIRST_MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Starts a session over `client` (the gRPC client on the attachables channel).
pub(crate) async fn open(
    mut client: crate::proto::terminal::terminal_client::TerminalClient<tonic::transport::Channel>,
    method: &'static str,
) -> Result<RemoteTerminal, AttachError> {
    let rpc = |status| AttachError::Rpc {
        method,
        path: String::new(),
        status,
    };
    let (output, output_rx) = mpsc::channel(64);
    let response = client
        .session(ReceiverStream::new(output_rx))
        .await
        .map_err(rpc)?;
    let mut reader = TerminalReader {
        input: response.into_inner(),
    };
    let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, reader.next())
        .await
        .map_err(|_| {
            rpc(Status::deadline_exceeded(
                "the client did not report its terminal size",
            ))
        })?;
    let size = match first {
        Some(TerminalInput::Resize { cols, rows }) => (cols, rows),
        Some(TerminalInput::Data(_)) => {
            return Err(rpc(Status::invalid_argument(
                "the terminal session did not start with the user's size",
            )));
        }
        None => {
            return Err(rpc(Status::cancelled(
                "the client ended the terminal session before it started",
            )));
        }
    };
    Ok(RemoteTerminal {
        size,
        reader,
        writer: TerminalWriter { output },
    })
}
