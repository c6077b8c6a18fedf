//! The callers' hosts as the worker and the API see them: reads and writes go to the client's
//! attachables connection, found in the session registry by session and client id.

use std::path::{Path, PathBuf};

use dagr_attach::{AttachablesClient, EntryKind, RemoteTerminal};
use std::sync::Arc;

use dagr_engine_state::{Client, SessionRegistry};

use crate::routes::{Attachables, AttachablesSlot};
use dagr_executor::{TerminalInput, WindowSize};
use dagr_metadata::ClientRef;
use dagr_worker::{
    HostAccess, HostEntry, HostEntryKind, HostError, HostFetch, HostListener, HostListing,
    HostStream, UserTerminal,
};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

/// How long a host call waits for an attachables handshake under way.
const HANDSHAKE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Finds a client's attachables through the registry.
pub struct ClientHosts {
    registry: SessionRegistry,
}

impl ClientHosts {
    pub fn new(registry: SessionRegistry) -> Self {
        ClientHosts { registry }
    }

    /// The registry's state of `client`.
    fn state(&self, client: &ClientRef) -> Result<Arc<Client>, HostError> {
        let session =
            self.registry
                .session(&client.session_id)
                .ok_or_else(|| HostError::SessionGone {
                    session_id: client.session_id.clone(),
                })?;
        session
            .client(&client.client_id)
            .ok_or_else(|| HostError::ClientGone {
                client: client.clone(),
            })
    }

    /// The client's attachables.
    async fn attachables(&self, client: &ClientRef) -> Result<AttachablesClient, HostError> {
        attachables_of(&*self.state(client)?, client).await
    }
}

/// The attachables of `state` (the registry's state of `client`); waits for a connection whose
/// handshake is under way (at most [`HANDSHAKE_WAIT`]).
async fn attachables_of(
    state: &Client,
    client: &ClientRef,
) -> Result<AttachablesClient, HostError> {
    let none = || HostError::NoAttachables {
        client: client.clone(),
    };
    let AttachablesSlot(slot) = state.extension::<AttachablesSlot>().ok_or_else(none)?;
    let mut watch = slot.subscribe();
    let settled = tokio::time::timeout(
        HANDSHAKE_WAIT,
        watch.wait_for(|a| !matches!(a, Attachables::Pending)),
    )
    .await;
    match settled {
        Ok(Ok(state)) => match &*state {
            Attachables::Ready(conn) => Ok(conn.clone()),
            _ => Err(none()),
        },
        _ => Err(none()),
    }
}

fn attachables_failed(e: dagr_attach::AttachError) -> HostError {
    HostError::Attachables {
        source: Box::new(e),
    }
}

fn host_entry(e: dagr_attach::HostEntry) -> HostEntry {
    HostEntry {
        path: e.path,
        kind: match e.kind {
            EntryKind::Dir => HostEntryKind::Dir,
            EntryKind::Symlink => HostEntryKind::Symlink,
            // Listings hold nothing else (checked as they arrive).
            EntryKind::File | EntryKind::Other => HostEntryKind::File,
        },
        mode: e.mode,
        size: e.size,
        mtime_ns: e.mtime_ns,
        ctime_ns: e.ctime_ns,
        ino: e.ino,
        dev: e.dev,
        link_target: e.link_target,
    }
}

/// The content phase of a listed host directory.
struct Fetch(dagr_attach::PendingFetch);

impl HostFetch for Fetch {
    fn fetch(
        self: Box<Self>,
        wanted: Vec<usize>,
        dest: PathBuf,
    ) -> BoxFuture<'static, Result<u64, HostError>> {
        Box::pin(async move {
            self.0
                .fetch(&wanted, &dest)
                .await
                .map(|stats| stats.bytes)
                .map_err(attachables_failed)
        })
    }
}

impl HostAccess for ClientHosts {
    fn list_dir<'a>(
        &'a self,
        client: &'a ClientRef,
        path: &'a str,
        include: &'a [String],
        exclude: &'a [String],
    ) -> BoxFuture<'a, Result<HostListing, HostError>> {
        Box::pin(async move {
            let state = self.state(client)?;
            let conn = attachables_of(&state, client).await?;
            let hostname = state.hostname();
            let (listing, pending) = conn
                .list_dir(path, include, exclude)
                .await
                .map_err(attachables_failed)?;
            Ok(HostListing {
                // The client's own name for its host, and the one in its metadata.
                host: format!("{}\n{hostname}", listing.host_id),
                root: listing.root,
                walk_started_ns: listing.walk_started_ns,
                entries: listing.entries.into_iter().map(host_entry).collect(),
                fetch: Box::new(Fetch(pending)),
            })
        })
    }

    fn push_dir<'a>(
        &'a self,
        client: &'a ClientRef,
        src: &'a Path,
        host_path: &'a str,
        wipe: bool,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        Box::pin(async move {
            let conn = self.attachables(client).await?;
            conn.push_dir(src, host_path, wipe)
                .await
                .map(|_| ())
                .map_err(attachables_failed)
        })
    }

    fn push_file<'a>(
        &'a self,
        client: &'a ClientRef,
        src: &'a Path,
        host_path: &'a str,
        allow_parent_dir: bool,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        Box::pin(async move {
            let conn = self.attachables(client).await?;
            // Dagger's semantics: parents are created; an existing directory at `host_path` is
            // refused unless `allow_parent_dir`, which writes the file into it under its name.
            let mut host_path = host_path.to_owned();
            if let Ok(stat) = conn.stat(&host_path).await
                && stat.kind == dagr_attach::EntryKind::Dir
            {
                if !allow_parent_dir {
                    return Err(HostError::IsDirectory { path: host_path });
                }
                let name = src.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                    HostError::NoFileName {
                        path: src.to_path_buf(),
                    }
                })?;
                host_path = format!("{}/{name}", host_path.trim_end_matches('/'));
            }
            conn.push_file(src, &host_path, None)
                .await
                .map(|_| ())
                .map_err(attachables_failed)
        })
    }

    fn read_file<'a>(
        &'a self,
        client: &'a ClientRef,
        host_path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, HostError>> {
        Box::pin(async move {
            let conn = self.attachables(client).await?;
            let dir = tempfile::tempdir().map_err(|source| HostError::Local {
                path: std::env::temp_dir(),
                source,
            })?;
            let dest = dir.path().join("file");
            conn.pull_file(host_path, &dest)
                .await
                .map_err(attachables_failed)?;
            tokio::fs::read(&dest)
                .await
                .map_err(|source| HostError::Local { path: dest, source })
        })
    }

    fn open_terminal<'a>(
        &'a self,
        client: &'a ClientRef,
    ) -> BoxFuture<'a, Result<UserTerminal, HostError>> {
        Box::pin(async move {
            let conn = self.attachables(client).await?;
            let remote = conn.open_terminal().await.map_err(attachables_failed)?;
            Ok(bridge_terminal(remote))
        })
    }

    fn dial<'a>(
        &'a self,
        client: &'a ClientRef,
        network: &'a str,
        address: &'a str,
    ) -> BoxFuture<'a, Result<HostStream, HostError>> {
        Box::pin(async move {
            let conn = self.attachables(client).await?;
            let stream = conn
                .dial(network, address)
                .await
                .map_err(attachables_failed)?;
            Ok(Box::new(stream) as HostStream)
        })
    }

    fn listen<'a>(
        &'a self,
        client: &'a ClientRef,
        address: &'a str,
    ) -> BoxFuture<'a, Result<HostListener, HostError>> {
        Box::pin(async move {
            let conn = self.attachables(client).await?;
            let mut remote = conn.listen(address).await.map_err(attachables_failed)?;
            let address = remote.address;
            let (tx, connections) = mpsc::channel(16);
            // Ends (and drops the remote listener, which closes it on the client) when the
            // receiver is dropped or the client's listener ends.
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        accepted = remote.accept() => match accepted {
                            Some(conn) => {
                                if tx.send(Box::new(conn) as HostStream).await.is_err() {
                                    break;
                                }
                            }
                            None => break,
                        },
                        () = tx.closed() => break,
                    }
                }
            });
            Ok(HostListener {
                address,
                connections,
            })
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
