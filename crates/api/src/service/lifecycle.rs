//! The lifecycle of services: [`RunningServices`] starts a service when something first holds
//! it (an exec that binds it, or `Service.start`), shares it within its session (one instance
//! per session and hostname), and stops it when the last holder lets go or the session ends.
//!
//! A service is up when each of its exposed TCP ports accepts a connection on its bridge
//! address (unless the port skips the health check). One that exits before that fails its
//! holders with an error that names it and ends with its last output.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use dagr_executor::{OutputChunk, OutputStream};
use dagr_solver::{Op, Solver};
use dagr_telemetry::{SpanCx, Stdio};
use dagr_worker::{BoxError, ServiceGuard, ServiceRun, ServiceStarter, Worker};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::state::{NetworkProtocol, Port, PortForward, Service, ServiceKind};

/// Bytes of a service's latest output kept for the error of a service that fails to start.
const OUTPUT_TAIL: usize = 16 * 1024;

/// How long one health check connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Errors of starting a service.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// No definition for the hostname in the session.
    #[error("unknown service {hostname}: it was not bound or started in this session")]
    Unknown { hostname: String },
    /// It could not start or exited before it was healthy.
    #[error("service {hostname} ({command}) {reason}")]
    Failed {
        hostname: String,
        command: String,
        reason: String,
    },
}

/// Where an instance is.
#[derive(Debug, Clone)]
enum Phase {
    Starting,
    Ready(Ipv4Addr),
    Failed(ServiceError),
    Exited,
}

/// One running service.
struct Instance {
    phase: watch::Sender<Phase>,
    holders: Mutex<usize>,
    cancel: CancellationToken,
    /// Asks a container service's process to stop (SIGTERM); `cancel` follows after
    /// [`STOP_GRACE`] if it has not exited.
    terminate: CancellationToken,
    /// Set by `Service.stop(kill: false)`: the last holder letting go terminates rather than
    /// kills.
    graceful: std::sync::atomic::AtomicBool,
    /// Whether it runs a process that SIGTERM can stop (a container service); host services and
    /// tunnels just stop.
    has_process: bool,
    /// Where a tunnel listens (its host and ports), once up.
    endpoint: Mutex<Option<Endpoint>>,
}

/// Where a running tunnel can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub ports: Vec<Port>,
}

type Key = (String, String);

#[derive(Default)]
struct State {
    /// Hostname -> definition and the sessions that defined it.
    definitions: HashMap<String, (Arc<Service>, HashSet<String>)>,
    /// (session, hostname) -> instance.
    running: HashMap<Key, Arc<Instance>>,
    /// (session, hostname) -> holds taken by `Service.start`.
    started: HashMap<Key, Vec<ServiceHold>>,
}

/// The services of every session (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct RunningServices {
    inner: Arc<Inner>,
}

struct Inner {
    solver: Solver<Worker>,
    state: Mutex<State>,
}

/// Keeps a service running; dropping it lets the service stop once nothing else holds it.
pub struct ServiceHold {
    inner: Arc<Inner>,
    key: Key,
    instance: Arc<Instance>,
    address: Ipv4Addr,
}

impl ServiceHold {
    /// The service's address on the engine's bridge.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }
}

impl Drop for ServiceHold {
    fn drop(&mut self) {
        let_go(&self.inner, &self.key, &self.instance);
    }
}

/// How long `Service.stop(kill: false)` lets a service's process exit after SIGTERM before it is
/// killed.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// One holder of `instance` lets go; the last one stops it and forgets it.
fn let_go(inner: &Inner, key: &Key, instance: &Arc<Instance>) {
    let last = {
        let mut holders = instance.holders.lock();
        *holders = holders.saturating_sub(1);
        *holders == 0
    };
    if last {
        if instance.has_process && instance.graceful.load(std::sync::atomic::Ordering::SeqCst) {
            instance.terminate.cancel();
            // Killed if still running after the grace period.
            let (cancel, mut phase) = (instance.cancel.clone(), instance.phase.subscribe());
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let exited = phase.wait_for(|p| matches!(p, Phase::Exited));
                    if tokio::time::timeout(STOP_GRACE, exited).await.is_err() {
                        cancel.cancel();
                    }
                });
            } else {
                instance.cancel.cancel();
            }
        } else {
            instance.cancel.cancel();
        }
        let mut state = inner.state.lock();
        if state
            .running
            .get(key)
            .is_some_and(|i| Arc::ptr_eq(i, instance))
        {
            state.running.remove(key);
        }
    }
}

impl RunningServices {
    pub fn new(solver: Solver<Worker>) -> RunningServices {
        RunningServices {
            inner: Arc::new(Inner {
                solver,
                state: Mutex::default(),
            }),
        }
    }

    /// Makes `service` startable by its hostname in `session`.
    pub fn define(&self, session: &str, service: &Arc<Service>) {
        self.inner
            .state
            .lock()
            .definitions
            .entry(service.hostname.clone())
            .or_insert_with(|| (service.clone(), HashSet::new()))
            .1
            .insert(session.to_owned());
    }

    /// Starts (or joins) the service `hostname` of `session` and waits until it is up.
    pub fn hold<'a>(
        &'a self,
        session: &'a str,
        hostname: &'a str,
        span: &'a SpanCx,
    ) -> BoxFuture<'a, Result<ServiceHold, ServiceError>> {
        // Boxed: a tunnel's instance holds its upstream, so this future contains itself.
        Box::pin(self.hold_inner(session, hostname, span))
    }

    async fn hold_inner(
        &self,
        session: &str,
        hostname: &str,
        span: &SpanCx,
    ) -> Result<ServiceHold, ServiceError> {
        let key = (session.to_owned(), hostname.to_owned());
        let (instance, service, fresh) = {
            let mut state = self.inner.state.lock();
            let service = state
                .definitions
                .get(hostname)
                .filter(|(_, sessions)| sessions.contains(session))
                .map(|(service, _)| service.clone())
                .ok_or_else(|| ServiceError::Unknown {
                    hostname: hostname.to_owned(),
                })?;
            let existing = state
                .running
                .get(&key)
                .filter(|i| !matches!(&*i.phase.borrow(), Phase::Exited | Phase::Failed(_)))
                .cloned();
            match existing {
                Some(instance) => {
                    *instance.holders.lock() += 1;
                    (instance, service, false)
                }
                None => {
                    let instance = Arc::new(Instance {
                        phase: watch::channel(Phase::Starting).0,
                        holders: Mutex::new(1),
                        cancel: CancellationToken::new(),
                        terminate: CancellationToken::new(),
                        graceful: std::sync::atomic::AtomicBool::new(false),
                        has_process: matches!(service.kind, ServiceKind::Container { .. }),
                        endpoint: Mutex::new(None),
                    });
                    state.running.insert(key.clone(), instance.clone());
                    (instance, service, true)
                }
            }
        };
        let mut phase = instance.phase.subscribe();
        let hold = |address| ServiceHold {
            inner: self.inner.clone(),
            key: key.clone(),
            instance: instance.clone(),
            address,
        };
        if fresh {
            let inner = self.inner.clone();
            let instance = instance.clone();
            let span = span.start(format!("start {}", command_of(&service)));
            tokio::spawn(run(inner, key.clone(), service.clone(), instance, span));
        }
        loop {
            let current = phase.borrow_and_update().clone();
            match current {
                Phase::Starting => {}
                Phase::Ready(address) => return Ok(hold(address)),
                Phase::Failed(e) => {
                    let_go(&self.inner, &key, &instance);
                    return Err(e);
                }
                Phase::Exited => {
                    let_go(&self.inner, &key, &instance);
                    return Err(ServiceError::Failed {
                        hostname: hostname.to_owned(),
                        command: command_of(&service),
                        reason: "exited".into(),
                    });
                }
            }
            if phase.changed().await.is_err() {
                let_go(&self.inner, &key, &instance);
                return Err(ServiceError::Failed {
                    hostname: hostname.to_owned(),
                    command: String::new(),
                    reason: "stopped while starting".into(),
                });
            }
        }
    }

    /// `Service.start`: holds the service until [`RunningServices::stop`] or the session ends.
    pub async fn start(
        &self,
        session: &str,
        hostname: &str,
        span: &SpanCx,
    ) -> Result<(), ServiceError> {
        let hold = self.hold(session, hostname, span).await?;
        self.inner
            .state
            .lock()
            .started
            .entry((session.to_owned(), hostname.to_owned()))
            .or_default()
            .push(hold);
        Ok(())
    }

    /// `Service.stop`: lets go of what `start` held; the service stops (and this waits for
    /// it) unless an exec still binds it. With `kill` its process is killed; without, it gets
    /// SIGTERM and [`STOP_GRACE`] to exit.
    pub async fn stop(&self, session: &str, hostname: &str, kill: bool) {
        let key = (session.to_owned(), hostname.to_owned());
        let holds = self
            .inner
            .state
            .lock()
            .started
            .remove(&key)
            .unwrap_or_default();
        let Some(instance) = holds.first().map(|h| h.instance.clone()) else {
            return;
        };
        if !kill {
            instance
                .graceful
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        drop(holds);
        if instance.cancel.is_cancelled() || instance.terminate.is_cancelled() {
            let mut phase = instance.phase.subscribe();
            let _ = phase.wait_for(|p| matches!(p, Phase::Exited)).await;
        }
    }

    /// Stops what the session started and forgets its definitions.
    pub fn release_session(&self, session: &str) {
        let released: Vec<ServiceHold> = {
            let mut state = self.inner.state.lock();
            state.definitions.retain(|_, (_, sessions)| {
                sessions.remove(session);
                !sessions.is_empty()
            });
            let keys: Vec<Key> = state
                .started
                .keys()
                .filter(|(s, _)| s == session)
                .cloned()
                .collect();
            keys.iter()
                .filter_map(|k| state.started.remove(k))
                .flatten()
                .collect()
        };
        drop(released);
    }

    /// Where the running tunnel `hostname` of `session` listens.
    pub fn endpoint(&self, session: &str, hostname: &str) -> Option<Endpoint> {
        let state = self.inner.state.lock();
        let instance = state
            .running
            .get(&(session.to_owned(), hostname.to_owned()))?;
        instance.endpoint.lock().clone()
    }

    /// Instances running (for tests and leak checks).
    pub fn running(&self) -> usize {
        self.inner.state.lock().running.len()
    }
}

/// What a service runs, for messages.
fn command_of(service: &Service) -> String {
    match &service.kind {
        ServiceKind::Container { exec } => match exec.op() {
            Op::Exec(exec) => exec.args.join(" "),
            _ => String::new(),
        },
        ServiceKind::Host { host, forwards, .. } => format!(
            "host {host}:{}",
            forwards
                .iter()
                .map(|f| f.backend.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        ServiceKind::Tunnel { upstream, .. } => format!("tunnel to {}", upstream.hostname),
    }
}

/// Runs one instance and records each phase until it ends.
async fn run(
    inner: Arc<Inner>,
    key: Key,
    service: Arc<Service>,
    instance: Arc<Instance>,
    service_span: dagr_telemetry::Span,
) {
    let failed = |reason: String| {
        Phase::Failed(ServiceError::Failed {
            hostname: key.1.clone(),
            command: command_of(&service),
            reason,
        })
    };
    match &service.kind {
        ServiceKind::Container { exec } => {
            run_container(
                &inner,
                &key,
                &service,
                exec,
                &instance,
                service_span.cx(),
                &failed,
            )
            .await;
        }
        ServiceKind::Host {
            client,
            host,
            forwards,
        } => {
            let ran = run_host(&inner, &key, client, host, forwards, &instance).await;
            if let Err(reason) = ran {
                instance.phase.send_replace(failed(reason));
            }
        }
        ServiceKind::Tunnel {
            upstream,
            client,
            forwards,
            native,
        } => {
            let ran = run_tunnel(
                &inner,
                &key,
                upstream,
                client,
                forwards,
                *native,
                &instance,
                &service_span.cx(),
            )
            .await;
            if let Err(reason) = ran {
                instance.phase.send_replace(failed(reason));
            }
        }
    }
    service_span.end();
    let mut state = inner.state.lock();
    if state
        .running
        .get(&key)
        .is_some_and(|i| Arc::ptr_eq(i, &instance))
    {
        state.running.remove(&key);
    }
}

/// Relays `conn` to `target` until both directions end (a refused target drops `conn`).
async fn relay<S>(mut conn: S, target: std::net::SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::net::TcpStream::connect(target).await {
        Ok(mut upstream) => dagr_worker::splice(&mut conn, &mut upstream).await,
        Err(e) => tracing::debug!(%target, error = %e, "service relay: connect failed"),
    }
}

/// A host service: listeners on a namespace of the engine's network published under the
/// service's hostname, each connection dialed through to the client's host.
async fn run_host(
    inner: &Arc<Inner>,
    key: &Key,
    client: &dagr_metadata::ClientRef,
    host: &str,
    forwards: &[PortForward],
    instance: &Arc<Instance>,
) -> Result<(), String> {
    let (session, hostname) = key;
    let worker = inner.solver.runner().clone();
    let network = worker.network().clone();
    let mut exec_network = tokio::task::spawn_blocking(move || network.acquire())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("has no network: {e}"))?;
    let released = |exec_network: dagr_network::ExecNetwork| {
        tokio::task::spawn_blocking(move || {
            if let Err(e) = exec_network.release() {
                tracing::warn!(error = %e, "host service network release failed");
            }
        })
    };
    if let Err(e) = exec_network.configure(session, std::slice::from_ref(hostname), Vec::new()) {
        released(exec_network);
        return Err(e.to_string());
    }
    let Some(address) = exec_network.address() else {
        released(exec_network);
        return Err(
            "has no address: services need the engine's bridge network (it runs with --network=none)"
                .into(),
        );
    };
    let mut accepting = tokio::task::JoinSet::new();
    for forward in forwards {
        let frontend = forward
            .frontend
            .filter(|&p| p != 0)
            .unwrap_or(forward.backend);
        let bound = dagr_network::run_inside(exec_network.netns_path(), move || {
            let listener = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, frontend))?;
            listener.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(listener)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|bound| bound.map_err(|e| format!("listen on port {frontend}: {e}")))
        .and_then(|l| tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string()));
        let listener = match bound {
            Ok(listener) => listener,
            Err(e) => {
                drop(accepting);
                released(exec_network);
                return Err(e);
            }
        };
        let target = format!("{host}:{}", forward.backend);
        let client = client.clone();
        let worker = worker.clone();
        accepting.spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            while let Ok((conn, _)) = listener.accept().await {
                let target = target.clone();
                let client = client.clone();
                let worker = worker.clone();
                relays.spawn(async move {
                    let mut conn = conn;
                    let relayed = dagr_worker::relay_to_host(
                        &**worker.host(),
                        &client,
                        "tcp",
                        &target,
                        &mut conn,
                    )
                    .await;
                    if let Err(e) = relayed {
                        tracing::debug!(%target, error = %e, "host service: dial failed");
                        // A reset, so the container sees its connection fail at once.
                        let _ =
                            rustix::net::sockopt::set_socket_linger(&conn, Some(Duration::ZERO));
                    }
                });
            }
        });
    }
    instance.phase.send_replace(Phase::Ready(address));
    instance.cancel.cancelled().await;
    drop(accepting);
    let _ = released(exec_network).await;
    instance.phase.send_replace(Phase::Exited);
    Ok(())
}

/// A tunnel: listeners on the client's host, each connection relayed to the upstream service
/// (held meanwhile).
#[allow(clippy::too_many_arguments)]
async fn run_tunnel(
    inner: &Arc<Inner>,
    key: &Key,
    upstream: &Arc<Service>,
    client: &dagr_metadata::ClientRef,
    forwards: &[PortForward],
    native: bool,
    instance: &Arc<Instance>,
    span: &SpanCx,
) -> Result<(), String> {
    let services = RunningServices {
        inner: inner.clone(),
    };
    services.define(&key.0, upstream);
    let hold = services
        .hold(&key.0, &upstream.hostname, span)
        .await
        .map_err(|e| e.to_string())?;
    let forwards: Vec<PortForward> = if forwards.is_empty() {
        upstream
            .ports
            .iter()
            .filter(|p| p.protocol == NetworkProtocol::Tcp)
            .map(|p| PortForward {
                backend: p.port,
                frontend: native.then_some(p.port),
                protocol: NetworkProtocol::Tcp,
            })
            .collect()
    } else {
        forwards.to_vec()
    };
    let worker = inner.solver.runner().clone();
    let pairs: Vec<(u16, u16)> = forwards
        .iter()
        .map(|f| {
            let frontend = f.frontend.unwrap_or(if native { f.backend } else { 0 });
            (frontend, f.backend)
        })
        .collect();
    let (accepting, ports) = forward_from_client(&worker, client, hold.address(), &pairs).await?;
    *instance.endpoint.lock() = Some(Endpoint {
        host: "127.0.0.1".into(),
        ports,
    });
    instance.phase.send_replace(Phase::Ready(hold.address()));
    instance.cancel.cancelled().await;
    drop(accepting);
    drop(hold);
    instance.phase.send_replace(Phase::Exited);
    Ok(())
}

/// Listens on the client's host at each `(frontend, backend)` (frontend 0: any port) and relays
/// every connection to `backend` on `target`, until the returned set is dropped. Gives the ports
/// as bound.
pub(crate) async fn forward_from_client(
    worker: &Worker,
    client: &dagr_metadata::ClientRef,
    target: Ipv4Addr,
    pairs: &[(u16, u16)],
) -> Result<(tokio::task::JoinSet<()>, Vec<Port>), String> {
    let mut accepting = tokio::task::JoinSet::new();
    let mut ports = Vec::new();
    for &(frontend, backend) in pairs {
        let mut listener = worker
            .host()
            .listen(client, &format!("127.0.0.1:{frontend}"))
            .await
            .map_err(|e| format!("listen on the client's port {frontend}: {e}"))?;
        ports.push(Port {
            port: listener.address.port(),
            protocol: NetworkProtocol::Tcp,
            description: None,
            skip_healthcheck: false,
        });
        let target = std::net::SocketAddr::from((target, backend));
        accepting.spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            while let Some(conn) = listener.connections.recv().await {
                relays.spawn(relay(conn, target));
            }
        });
    }
    Ok((accepting, ports))
}

/// A container service: solves its inputs, runs its exec, checks its ports.
async fn run_container(
    inner: &Arc<Inner>,
    key: &Key,
    service: &Service,
    exec: &Arc<dagr_solver::Vertex>,
    instance: &Arc<Instance>,
    span: SpanCx,
    failed: &(dyn Fn(String) -> Phase + Sync),
) {
    let (session, hostname) = key;
    let Op::Exec(op) = exec.op() else {
        instance.phase.send_replace(failed("is not an exec".into()));
        return;
    };
    let mut inputs = Vec::new();
    for input in exec.inputs() {
        let solved = tokio::select! {
            solved = inner.solver.solve(input, session, &span) => solved,
            _ = instance.cancel.cancelled() => {
                instance.phase.send_replace(Phase::Exited);
                return;
            }
        };
        match solved {
            Ok(solved) => inputs.push(solved.result),
            Err(e) => {
                instance
                    .phase
                    .send_replace(failed(format!("could not be prepared: {e}")));
                return;
            }
        }
    }
    let (output_tx, mut output_rx) = tokio::sync::mpsc::channel::<OutputChunk>(64);
    let (address_tx, address_rx) = tokio::sync::oneshot::channel();
    let worker = inner.solver.runner().clone();
    let run = {
        let op = op.clone();
        let session = session.clone();
        let run = ServiceRun {
            hostname: hostname.clone(),
            cancel: instance.cancel.clone(),
            terminate: instance.terminate.clone(),
            output: output_tx,
            address: address_tx,
        };
        async move { worker.run_service(&op, &inputs, &session, run).await }
    };
    // The output goes to the span as logs; its tail is kept for the error of a failed start.
    let tail = Arc::new(Mutex::new(Vec::<u8>::new()));
    let logger = {
        let tail = tail.clone();
        let span = span.clone();
        async move {
            let mut stdout = span.log_stream(Stdio::Stdout);
            let mut stderr = span.log_stream(Stdio::Stderr);
            while let Some(chunk) = output_rx.recv().await {
                match chunk.stream {
                    OutputStream::Stdout => stdout.write(&chunk.bytes),
                    OutputStream::Stderr => stderr.write(&chunk.bytes),
                }
                let mut tail = tail.lock();
                tail.extend_from_slice(&chunk.bytes);
                if tail.len() > OUTPUT_TAIL {
                    let cut = tail.len() - OUTPUT_TAIL;
                    tail.drain(..cut);
                }
            }
            if span.is_on() {
                stdout.finish();
                stderr.finish();
            }
        }
    };
    let process = tokio::spawn(async move {
        let (ran, ()) = tokio::join!(run, logger);
        ran
    });
    let exited = |ran: Result<Result<i32, dagr_worker::WorkerError>, tokio::task::JoinError>| {
        let how = match ran {
            Ok(Ok(code)) => format!("exited with code {code}"),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(e) => format!("failed: {e}"),
        };
        let output = String::from_utf8_lossy(&tail.lock()).trim().to_owned();
        if output.is_empty() {
            format!("{how} before it was healthy")
        } else {
            format!("{how} before it was healthy; its last output:\n{output}")
        }
    };
    let mut process = process;
    let address = tokio::select! {
        address = address_rx => address.ok().flatten(),
        ran = &mut process => {
            instance.phase.send_replace(failed(exited(ran)));
            return;
        }
    };
    let Some(address) = address else {
        instance.cancel.cancel();
        let _ = process.await;
        instance.phase.send_replace(failed(
            "has no address: services need the engine's bridge network (it runs with --network=none)".into(),
        ));
        return;
    };
    let checks: Vec<u16> = service
        .ports
        .iter()
        .filter(|p| p.protocol == NetworkProtocol::Tcp && !p.skip_healthcheck)
        .map(|p| p.port)
        .collect();
    tokio::select! {
        () = wait_healthy(address, &checks) => {
            instance.phase.send_replace(Phase::Ready(address));
        }
        ran = &mut process => {
            instance.phase.send_replace(failed(exited(ran)));
            return;
        }
    }
    let _ = process.await;
    instance.phase.send_replace(Phase::Exited);
}

/// Resolves once every port in `ports` accepts a TCP connection on `address`.
async fn wait_healthy(address: Ipv4Addr, ports: &[u16]) {
    let started = tokio::time::Instant::now();
    for &port in ports {
        let mut pause = Duration::from_millis(2);
        loop {
            let connected = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio::net::TcpStream::connect((address, port)),
            )
            .await;
            if matches!(connected, Ok(Ok(_))) {
                break;
            }
            tokio::time::sleep(pause).await;
            // A refused connection costs microseconds: poll often while a service usually
            // comes up, then back off.
            if started.elapsed() > Duration::from_millis(500) {
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

impl ServiceStarter for RunningServices {
    fn start<'a>(
        &'a self,
        session_id: &'a str,
        hostnames: &'a [String],
    ) -> BoxFuture<'a, Result<ServiceGuard, BoxError>> {
        Box::pin(async move {
            let span = SpanCx::off();
            // All at once: one failing does not keep the others from starting.
            let started = futures::future::join_all(
                hostnames
                    .iter()
                    .map(|hostname| self.hold(session_id, hostname, &span)),
            )
            .await;
            let mut holds = Vec::new();
            let mut errors = Vec::new();
            for result in started {
                match result {
                    Ok(hold) => holds.push(hold),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            if !errors.is_empty() {
                return Err(errors.join("\n").into());
            }
            Ok(Box::new(holds) as ServiceGuard)
        })
    }
}
