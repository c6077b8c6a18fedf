//! The callers' hosts as the worker and the API see them: reads and writes go to the client's
//! attachables connection, found in the session registry by session and client id.

use std::path::Path;

use dagr_api::{Caller, HostFiles, UserTerminal};
use dagr_attach::{AttachablesClient, RemoteTerminal};
use dagr_engine_state::SessionRegistry;
use dagr_executor::{TerminalInput, WindowSize};
use dagr_solver::HostScope;
use dagr_worker::HostAccess;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

/// Finds a client's attachables through the registry.
pub struct ClientHosts {
    registry: SessionRegistry,
}

impl ClientHosts {
    pub fn new(registry: SessionRegistry) -> Self {
        ClientHosts { registry }
    }

    fn attachables(&self, session_id: &str, client_id: &str) -> Result<AttachablesClient, String> {
        let session = self
            .registry
            .session(session_id)
            .ok_or_else(|| format!("session {session_id} is gone"))?;
        let client = session
            .client(client_id)
            .ok_or_else(|| format!("client {client_id} is not in session {session_id}"))?;
        client.extension::<AttachablesClient>().ok_or_else(|| {
            format!("client {client_id} has no attachables connection, so its host cannot be read or written")
        })
    }
}

impl HostAccess for ClientHosts {
    fn pull_dir<'a>(
        &'a self,
        scope: &'a HostScope,
        path: &'a str,
        include: &'a [String],
        exclude: &'a [String],
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let conn = self.attachables(&scope.session_id, &scope.client_id)?;
            conn.pull_dir(path, include, exclude, dest)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

impl HostFiles for ClientHosts {
    fn push_dir<'a>(
        &'a self,
        caller: &'a Caller,
        src: &'a Path,
        host_path: &'a str,
        wipe: bool,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let conn = self.attachables(&caller.session_id, &caller.client_id)?;
            conn.push_dir(src, host_path, wipe)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn push_file<'a>(
        &'a self,
        caller: &'a Caller,
        src: &'a Path,
        host_path: &'a str,
        allow_parent_dir: bool,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let conn = self.attachables(&caller.session_id, &caller.client_id)?;
            // Dagger's semantics: parents are created; an existing directory at `host_path` is
            // refused unless `allow_parent_dir`, which writes the file into it under its name.
            let mut host_path = host_path.to_owned();
            if let Ok(stat) = conn.stat(&host_path).await
                && stat.kind == dagr_attach::EntryKind::Dir
            {
                if !allow_parent_dir {
                    return Err(format!(
                        "destination {host_path:?} is a directory; must be a file path unless allowParentDirPath is set"
                    ));
                }
                let name = src
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| format!("{} has no file name", src.display()))?;
                host_path = format!("{}/{name}", host_path.trim_end_matches('/'));
            }
            conn.push_file(src, &host_path, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn read_file<'a>(
        &'a self,
        caller: &'a Caller,
        host_path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let conn = self.attachables(&caller.session_id, &caller.client_id)?;
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let dest = dir.path().join("file");
            conn.pull_file(host_path, &dest)
                .await
                .map_err(|e| e.to_string())?;
            tokio::fs::read(&dest).await.map_err(|e| e.to_string())
        })
    }

    fn open_terminal<'a>(
        &'a self,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<UserTerminal, String>> {
        Box::pin(async move {
            let conn = self.attachables(&caller.session_id, &caller.client_id)?;
            let remote = conn.open_terminal().await.map_err(|e| e.to_string())?;
            Ok(bridge_terminal(remote))
        })
    }
}

/// Carries a terminal session of the client's attachables to the API: the user's input to the
/// process, its output then its exit to the user.
fn bridge_terminal(remote: RemoteTerminal) -> UserTerminal {
    let RemoteTerminal {
        size: (cols, rows),
        mut reader,
        writer,
    } = remote;
    let (input_tx, input) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(item) = reader.next().await {
            let item = match item {
                dagr_attach::TerminalInput::Data(bytes) => TerminalInput::Data(bytes),
                dagr_attach::TerminalInput::Resize { cols, rows } => {
                    TerminalInput::Resize(WindowSize { cols, rows })
                }
            };
            if input_tx.send(item).await.is_err() {
                break;
            }
        }
    });
    let (output, mut output_rx) = mpsc::channel::<dagr_executor::OutputChunk>(64);
    let (exit, exit_rx) = oneshot::channel();
    tokio::spawn(async move {
        while let Some(chunk) = output_rx.recv().await {
            if !writer.output(chunk.bytes).await {
                return;
            }
        }
        match exit_rx.await {
            Ok(Ok(code)) => writer.exit(code, String::new()).await,
            Ok(Err(error)) => writer.exit(-1, error).await,
            Err(_) => writer.exit(-1, "the terminal ended".to_owned()).await,
        }
    });
    UserTerminal {
        size: WindowSize { cols, rows },
        input,
        output,
        exit,
    }
}
