//! `Exec` ops and terminals: a writable snapshot on the rootfs input, mounted and run with
//! [`dagr_executor::Executor`] (runc), with input snapshots, cache volumes, tmpfs and secrets
//! mounted; writable input mounts become extra outputs. With privileged nesting the process
//! gets a listener served by [`crate::NestedClients`]. [`Worker::run_terminal`] runs an exec
//! interactively and commits nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use dagr_executor::{
    ExecMount, ExecMountKind, ExecSpec, OutputChunk, OutputStream, PrestartContext, Rootfs,
    RunOptions, TerminalIo,
};
use dagr_solver::{InputRef, MountSource, ResultRef, RunCtx, RunOutput};
use dagr_telemetry::{SpanCx, Stdio, TraceParent, attr};

use crate::mounts::Cleanup;
use crate::{
    CacheVolumeUse, ExecMeta, NestedClient, NestedError, NestedServing, ResultMeta, Worker,
    WorkerError, blocking, fsops, op_err, output_snapshot, random_id,
};

/// An exec whose process exited with a non-zero code (or was killed: 128 + signal), with what
/// it printed: what the API reports as an `EXEC_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "process \"{}\" did not complete successfully: exit code: {exit_code}{}",
    args.join(" "),
    limit.map(|l| format!(": {l}")).unwrap_or_default()
)]
pub struct ExecFailed {
    /// argv of the process.
    pub args: Vec<String>,
    pub exit_code: i32,
    /// The resource limit it ran into, when that is why it failed.
    pub limit: Option<dagr_executor::LimitHit>,
    /// Captured stdout and stderr (up to the worker's output cap).
    pub stdout: Bytes,
    pub stderr: Bytes,
}

/// An exec op ready to run (see [`Worker::prepare_exec`]); its cleanup removes the snapshots
/// unless they are committed.
struct PreparedExec {
    cleanup: Cleanup,
    rootfs: PathBuf,
    /// Snapshot keys of the root and the writable mounts, in output order.
    writable: Vec<String>,
    volumes: Vec<CacheVolumeUse>,
    spec: ExecSpec,
    options: RunOptions,
    /// Keeps the services it binds running.
    services: Option<crate::ServiceGuard>,
    /// Forward the unix sockets it mounts, until dropped.
    sockets: Vec<SocketForward>,
}

/// Bytes each direction of a relayed connection copies at once, at first and at most (see
/// [`splice`]).
const RELAY_BUFFER_MIN: usize = 16 << 10;
const RELAY_BUFFER_MAX: usize = 1 << 20;

/// A unix socket listening in the worker's work directory, each connection forwarded to a
/// socket of a client's host; dropping it stops forwarding and removes the socket file.
pub(crate) struct SocketForward {
    pub(crate) path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SocketForward {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How [`Worker::run_service`] runs a service's exec.
pub struct ServiceRun {
    /// Its hostname: the container's, and the name it is published under in its session.
    pub hostname: String,
    /// Stops it (the container is killed).
    pub cancel: tokio_util::sync::CancellationToken,
    /// Asks it to stop: SIGTERM to its process, which then exits in its own time (`cancel`
    /// still kills it).
    pub terminate: tokio_util::sync::CancellationToken,
    /// Receives its output as it is read.
    pub output: tokio::sync::mpsc::Sender<OutputChunk>,
    /// Receives its address on the bridge once its network exists (before the process starts).
    pub address: tokio::sync::oneshot::Sender<Option<std::net::Ipv4Addr>>,
}

/// `p` made absolute against `workdir`.
fn absolute(workdir: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("{}/{p}", workdir.trim_end_matches('/'))
    }
}

impl Worker {
    /// Everything an exec op needs before it runs: writable snapshots of its root and mounts,
    /// cache volumes, secrets, the process spec and (with nesting) the prestart hook.
    async fn prepare_exec(
        &self,
        op: &dagr_solver::ExecOp,
        inputs: &[ResultRef],
        session_id: &str,
    ) -> Result<PreparedExec, WorkerError> {
        if let Some(platform) = &op.platform {
            dagr_executor::check_emulator(
                &dagr_solver::Platform::host(),
                platform,
                std::path::Path::new(dagr_executor::emulation::BINFMT_MISC),
            )
            .map_err(|e| WorkerError::Emulation(Box::new(e)))?;
        }
        let input_snapshot = |r: &InputRef| -> Result<String, WorkerError> {
            let result = inputs
                .get(r.input as usize)
                .ok_or_else(|| op_err("exec", format!("input {} missing", r.input)))?;
            output_snapshot(result, r.output)
        };
        let root = op
            .mounts
            .iter()
            .find(|m| m.dest == "/")
            .ok_or_else(|| op_err("exec", "no root filesystem mount"))?;
        let MountSource::Input { input, .. } = &root.source else {
            return Err(op_err("exec", "the root filesystem must be an input"));
        };
        let mut cleanup = Cleanup::new(self.clone());
        let (root_key, rootfs) = self
            .prepare_mounted(&mut cleanup, Some(&input_snapshot(input)?), "exec")
            .await?;
        let mut writable = vec![root_key];
        let mut mounts = Vec::new();
        let mut volumes = Vec::new();
        let mut sockets = Vec::new();
        for m in op.mounts.iter().filter(|m| m.dest != "/") {
            let kind = match &m.source {
                MountSource::Input { input, path } => {
                    let parent = input_snapshot(input)?;
                    let (key, dir) = self
                        .prepare_mounted(&mut cleanup, Some(&parent), "mount")
                        .await?;
                    if !m.readonly {
                        writable.push(key);
                    }
                    let path = path.clone();
                    let source =
                        blocking(move || Ok(fsops::resolve_in_root(&dir, &path, true)?)).await?;
                    ExecMountKind::Bind {
                        source,
                        readonly: m.readonly,
                    }
                }
                MountSource::Cache { id, sharing, base } => {
                    let used = self.inner.volumes.acquire(id, *sharing).await?;
                    let source = used.dir.clone();
                    if let Some(base) = base {
                        self.seed_cache(&source, &input_snapshot(base)?).await?;
                    }
                    volumes.push(used);
                    ExecMountKind::Bind {
                        source,
                        readonly: m.readonly,
                    }
                }
                MountSource::Tmpfs { size } => ExecMountKind::Tmpfs { size: *size },
                MountSource::Secret {
                    secret_id,
                    uid,
                    gid,
                    mode,
                } => ExecMountKind::Secret {
                    bytes: self.secret(session_id, secret_id)?,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                },
                MountSource::UnixSocket {
                    session_id,
                    client_id,
                    path,
                    uid,
                    gid,
                } => {
                    let client = dagr_metadata::ClientRef {
                        session_id: session_id.clone(),
                        client_id: client_id.clone(),
                    };
                    let forward = self.forward_socket(client, path.clone(), *uid, *gid)?;
                    let source = forward.path.clone();
                    sockets.push(forward);
                    ExecMountKind::Bind {
                        source,
                        readonly: false,
                    }
                }
            };
            mounts.push(ExecMount {
                dest: m.dest.clone(),
                kind,
            });
        }
        let mut env: Vec<String> = op.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (name, id) in &op.secret_env {
            let value = self.secret(session_id, id)?;
            env.push(format!("{name}={}", String::from_utf8_lossy(&value)));
        }
        let spec = ExecSpec {
            args: op.args.clone(),
            env,
            workdir: op.workdir.clone(),
            user: op.user.clone().unwrap_or_default(),
            stdin: op.stdin.clone().map(Bytes::from),
            hostname: op.hostname.clone().unwrap_or_default(),
            mounts,
            insecure_root_capabilities: op.insecure_root_capabilities,
            network_disabled: op.network_disabled,
        };
        let mut options = RunOptions::default();
        let mut services = None;
        if !op.service_bindings.is_empty() {
            let starter = self.inner.services.get().ok_or_else(|| {
                op_err(
                    "exec",
                    "this engine cannot start the services an exec binds",
                )
            })?;
            let hostnames: Vec<String> = op
                .service_bindings
                .iter()
                .map(|b| b.hostname.clone())
                .collect();
            services = Some(
                starter
                    .start(session_id, &hostnames)
                    .await
                    .map_err(|e| op_err("exec", format!("start services: {e}")))?,
            );
            options.names = Some(dagr_executor::ExecNames {
                scope: session_id.to_owned(),
                publish: Vec::new(),
                aliases: op
                    .service_bindings
                    .iter()
                    .map(|b| (b.alias.clone(), b.hostname.clone()))
                    .collect(),
            });
        }
        if op.privileged_nesting {
            options.prestart = Some(self.nesting_hook(op, session_id, &rootfs)?);
            // It may wait for execs of its own nested client.
            options.outside_limit = true;
        }
        Ok(PreparedExec {
            cleanup,
            rootfs,
            writable,
            volumes,
            spec,
            options,
            services,
            sockets,
        })
    }

    pub(crate) async fn run_exec(
        &self,
        op: &dagr_solver::ExecOp,
        inputs: &[ResultRef],
        ctx: &RunCtx,
    ) -> Result<RunOutput, WorkerError> {
        let PreparedExec {
            cleanup,
            rootfs,
            writable,
            volumes,
            mut spec,
            mut options,
            services,
            sockets,
        } = {
            let started = std::time::Instant::now();
            let prepared = self.prepare_exec(op, inputs, ctx.session_id()).await?;
            self.inner.exec_phases.add_mount(started.elapsed());
            prepared
        };
        // With telemetry on, the process continues the op's trace (TRACEPARENT) and its output
        // is logged to the op's span as it is read.
        let span = ctx.span();
        if let Some(parent) = span.traceparent() {
            spec.env.push(format!("{}={parent}", TraceParent::ENV));
        }
        let (sink, chunks) = tokio::sync::mpsc::channel(64);
        if span.is_on() {
            options.output_sink = Some(sink);
        } else {
            drop(sink);
        }
        let root = Rootfs::Directory(rootfs.clone());
        let run = self.inner.executor.run(&root, &spec, options);
        // The executor drops the sink when the run ends, so the output's end-of-stream records
        // are published before this returns (and the op's span ends after them).
        let (ran, ()) = tokio::join!(run, log_output(span, chunks));
        match &ran {
            Ok(result) => ctx.annotate(attr::EXIT_CODE, result.exit_code),
            Err(dagr_executor::ExecError::Failed { exit_code, .. }) => {
                ctx.annotate(attr::EXIT_CODE, *exit_code);
            }
            Err(_) => {}
        }
        drop(sockets);
        let result = ran?;
        self.inner
            .exec_phases
            .add_run(&result.phases, result.placed_launcher);
        drop(volumes);
        drop(services);
        let stdout = String::from_utf8_lossy(&result.stdout.bytes).into_owned();
        let stderr = String::from_utf8_lossy(&result.stderr.bytes).into_owned();
        let redirects: Vec<(String, Bytes)> = [
            (&op.redirect_stdout, &result.stdout.bytes),
            (&op.redirect_stderr, &result.stderr.bytes),
        ]
        .into_iter()
        .filter_map(|(path, bytes)| Some((absolute(&op.workdir, path.as_ref()?), bytes.clone())))
        .collect();
        if !redirects.is_empty() {
            blocking(move || {
                for (path, bytes) in redirects {
                    // The text as captured, like the result's (lossily decoded) output.
                    let text = String::from_utf8_lossy(&bytes);
                    fsops::mkfile(&rootfs, &path, text.as_bytes(), 0o644, None)?;
                }
                Ok(())
            })
            .await?;
        }
        let committing = std::time::Instant::now();
        let mut names = self.commit(cleanup, &writable).await?;
        self.inner.exec_phases.add_commit(committing.elapsed());
        let id = names.remove(0);
        let meta = ResultMeta {
            outputs: names,
            exec: Some(ExecMeta {
                stdout,
                stderr,
                exit_code: result.exit_code,
            }),
            ..Default::default()
        };
        Ok(RunOutput::new(ResultRef::new(id, meta.into_value())))
    }

    /// Runs `op` (an exec whose inputs are solved to `inputs`) interactively on a terminal for
    /// session `session_id`: the process reads `terminal`'s input and its output is sent to
    /// `output`. Nothing is cached or committed: what it changes is discarded, like a
    /// container's scratch layer. Returns the process's exit code, zero or not.
    pub async fn run_terminal(
        &self,
        op: &dagr_solver::ExecOp,
        inputs: &[ResultRef],
        session_id: &str,
        terminal: TerminalIo,
        output: tokio::sync::mpsc::Sender<OutputChunk>,
    ) -> Result<i32, WorkerError> {
        let PreparedExec {
            cleanup,
            rootfs,
            volumes,
            spec,
            mut options,
            services,
            sockets,
            ..
        } = self.prepare_exec(op, inputs, session_id).await?;
        options.terminal = Some(terminal);
        options.output_sink = Some(output);
        // A terminal waits on its user for as long as they like: it takes no exec slot.
        options.outside_limit = true;
        let ran = self
            .inner
            .executor
            .run(&Rootfs::Directory(rootfs), &spec, options)
            .await;
        drop(volumes);
        drop(services);
        drop(sockets);
        // Unmounts and removes the scratch snapshots.
        drop(cleanup);
        exit_code_of(ran)
    }

    /// Runs `op` (an exec whose inputs are solved to `inputs`) as a service of session
    /// `session_id`: published under `run.hostname` in the session's DNS, its output sent to
    /// `run.output`, until it exits or `run.cancel` fires. Like a terminal, nothing is cached or
    /// committed, and it takes no exec slot (execs wait on it). Returns its exit code.
    pub async fn run_service(
        &self,
        op: &dagr_solver::ExecOp,
        inputs: &[ResultRef],
        session_id: &str,
        run: ServiceRun,
    ) -> Result<i32, WorkerError> {
        let PreparedExec {
            cleanup,
            rootfs,
            volumes,
            mut spec,
            mut options,
            services,
            sockets,
            ..
        } = self.prepare_exec(op, inputs, session_id).await?;
        spec.hostname = run.hostname.clone();
        let names = options
            .names
            .get_or_insert_with(|| dagr_executor::ExecNames {
                scope: session_id.to_owned(),
                ..Default::default()
            });
        names.publish.push(run.hostname.clone());
        // Report the address from the prestart hook, then run the nesting hook if any.
        let address = Arc::new(parking_lot::Mutex::new(Some(run.address)));
        let nesting = options.prestart.take();
        options.prestart = Some(Arc::new(move |ctx: PrestartContext| {
            if let Some(tx) = address.lock().take() {
                let _ = tx.send(ctx.address);
            }
            match &nesting {
                Some(hook) => hook(ctx),
                None => Box::pin(async { Ok(Vec::new()) }),
            }
        }));
        options.output_sink = Some(run.output);
        options.cancel = Some(run.cancel);
        options.terminate = Some(run.terminate);
        options.outside_limit = true;
        let ran = self
            .inner
            .executor
            .run(&Rootfs::Directory(rootfs), &spec, options)
            .await;
        drop(volumes);
        drop(services);
        drop(sockets);
        drop(cleanup);
        exit_code_of(ran)
    }

    /// The prestart hook of a nested exec: a listener on 127.0.0.1:0 inside the exec's network
    /// namespace, served by the engine for a fresh nested client of the session, whose port and
    /// token go into the process environment. The serving guard lives as long as the hook, which
    /// the executor drops when the exec ends.
    fn nesting_hook(
        &self,
        op: &dagr_solver::ExecOp,
        session_id: &str,
        rootfs: &Path,
    ) -> Result<dagr_executor::PrestartHook, WorkerError> {
        let nested = self
            .inner
            .nested
            .clone()
            .ok_or_else(|| op_err("exec", "this engine cannot serve nested clients"))?;
        let client = NestedClient {
            session_id: op
                .nesting_session
                .clone()
                .unwrap_or_else(|| session_id.to_owned()),
            client_id: format!("nested-{}", random_id()),
            token: hex::encode(rand::random::<[u8; 16]>()),
            hostname: op.hostname.clone().unwrap_or_default(),
            rootfs: rootfs.to_path_buf(),
            workdir: if op.workdir.is_empty() {
                "/".to_owned()
            } else {
                op.workdir.clone()
            },
            pid_file: PathBuf::new(),
            call: op.nested_call.clone(),
        };
        let serving: Arc<parking_lot::Mutex<Vec<NestedServing>>> = Arc::default();
        Ok(Arc::new(move |ctx: PrestartContext| {
            let nested = nested.clone();
            let serving = serving.clone();
            let mut client = client.clone();
            Box::pin(async move {
                client.pid_file = ctx.pid_file.clone();
                let listener = ctx
                    .run_in_netns(|| std::net::TcpListener::bind("127.0.0.1:0"))
                    .await?
                    .map_err(NestedError::Listener)?;
                let port = listener.local_addr().map_err(NestedError::Listener)?.port();
                let token = client.token.clone();
                let served = nested.serve(listener, client).await?;
                serving.lock().push(served);
                // The SDK inside exports its spans to the same listener, under the exec's span.
                let mut env = vec![
                    format!("DAGGER_SESSION_PORT={port}"),
                    format!("DAGGER_SESSION_TOKEN={token}"),
                ];
                env.extend(
                    dagr_telemetry::exporter_env(port, None)
                        .into_iter()
                        .map(|(k, v)| format!("{k}={v}")),
                );
                Ok(env)
            })
        }))
    }

    /// A unix socket in the work directory (owned by `uid:gid`) whose connections are
    /// forwarded to `path` on `client`'s host.
    pub(crate) fn forward_socket(
        &self,
        client: dagr_metadata::ClientRef,
        path: String,
        uid: u32,
        gid: u32,
    ) -> Result<SocketForward, WorkerError> {
        let socket_path = self.inner.work_dir.join(format!("sock-{}", random_id()));
        let listener = tokio::net::UnixListener::bind(&socket_path).map_err(|e| {
            op_err(
                "exec",
                format!("unix socket {}: {e}", socket_path.display()),
            )
        })?;
        let chowned = std::os::unix::fs::chown(&socket_path, Some(uid), Some(gid));
        let forward = SocketForward {
            path: socket_path,
            task: tokio::spawn({
                let host = self.inner.host.clone();
                async move {
                    let mut relays = tokio::task::JoinSet::new();
                    while let Ok((mut conn, _)) = listener.accept().await {
                        let host = host.clone();
                        let client = client.clone();
                        let path = path.clone();
                        relays.spawn(async move {
                            if let Err(e) =
                                relay_to_host(&*host, &client, "unix", &path, &mut conn).await
                            {
                                tracing::debug!(%path, error = %e, "unix socket: dial failed");
                            }
                        });
                    }
                }
            }),
        };
        chowned.map_err(|e| op_err("exec", format!("chown unix socket: {e}")))?;
        Ok(forward)
    }

    /// Fills an empty cache volume directory with the contents of `snapshot` (a volume seeded
    /// from a directory); a volume that already holds something is left as it is.
    async fn seed_cache(&self, dir: &std::path::Path, snapshot: &str) -> Result<(), WorkerError> {
        let target = dir.to_path_buf();
        let empty = blocking(move || {
            Ok(std::fs::read_dir(&target)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(false))
        })
        .await?;
        if !empty {
            return Ok(());
        }
        let view = self.mount_view(snapshot).await?;
        let (root, target) = (view.path().to_path_buf(), dir.to_path_buf());
        let copied = blocking(move || {
            fsops::copy(&root, "/", &target, "/", &fsops::CopyOptions::default())?;
            Ok(())
        })
        .await;
        view.release().await;
        copied
    }

    pub(crate) fn secret(&self, session_id: &str, id: &str) -> Result<Bytes, WorkerError> {
        self.inner
            .secrets
            .secret(session_id, id)
            .ok_or_else(|| WorkerError::UnknownSecret {
                id: id.to_owned(),
                session: session_id.to_owned(),
            })
    }
}

/// The exit code of a run that commits nothing (a terminal, a service): zero or not.
fn exit_code_of(
    ran: Result<dagr_executor::ExecResult, dagr_executor::ExecError>,
) -> Result<i32, WorkerError> {
    match ran {
        Ok(result) => Ok(result.exit_code),
        Err(dagr_executor::ExecError::Failed { exit_code, .. }) => Ok(exit_code),
        Err(e) => Err(e.into()),
    }
}

/// Copies both ways between two connections until each direction has ended (each EOF is
/// passed on as a shutdown of the other side's write half) or either fails. Each direction
/// reads into a buffer of [`RELAY_BUFFER_MIN`] that doubles, up to [`RELAY_BUFFER_MAX`],
/// whenever a read fills it, and halves after eight reads in a row that fill an eighth of it
/// or less: a quiet connection holds little memory, and a bulk transfer moves large chunks (a
/// tunnel's messages and the syscalls per byte are what a relay's throughput depends on).
pub async fn splice<A, B>(a: &mut A, b: &mut B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let _ = tokio::try_join!(
        pump(&mut a_read, &mut b_write),
        pump(&mut b_read, &mut a_write)
    );
}

/// One direction of [`splice`].
async fn pump<R, W>(reader: &mut R, writer: &mut W) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; RELAY_BUFFER_MIN];
    let mut small_reads = 0;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return writer.shutdown().await;
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
        small_reads = if n <= buf.len() / 8 {
            small_reads + 1
        } else {
            0
        };
        if n == buf.len() && buf.len() < RELAY_BUFFER_MAX {
            buf.resize(buf.len() * 2, 0);
        } else if small_reads >= 8 && buf.len() > RELAY_BUFFER_MIN {
            // The burst is over: a quiet connection gives its memory back.
            buf.truncate(buf.len() / 2);
            buf.shrink_to_fit();
            small_reads = 0;
        }
    }
}

/// Relays `conn` to `address` on `client`'s host (`network` "tcp" or "unix") until both
/// directions ended; a failed dial is returned (the caller decides what `conn` sees).
pub async fn relay_to_host<S>(
    host: &dyn crate::HostAccess,
    client: &dagr_metadata::ClientRef,
    network: &str,
    address: &str,
    conn: &mut S,
) -> Result<(), crate::HostError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut remote = host.dial(client, network, address).await?;
    splice(conn, &mut remote).await;
    Ok(())
}

/// Logs a run's output chunks to the op's span, line by line, until the run drops its sink;
/// then ends both streams (their end-of-stream records).
async fn log_output(span: &SpanCx, mut chunks: tokio::sync::mpsc::Receiver<OutputChunk>) {
    let mut stdout = span.log_stream(Stdio::Stdout);
    let mut stderr = span.log_stream(Stdio::Stderr);
    while let Some(chunk) = chunks.recv().await {
        match chunk.stream {
            OutputStream::Stdout => stdout.write(&chunk.bytes),
            OutputStream::Stderr => stderr.write(&chunk.bytes),
        }
    }
    if span.is_on() {
        stdout.finish();
        stderr.finish();
    }
}
