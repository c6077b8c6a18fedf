//! Nested clients: an exec with privileged nesting gets a listener inside its
//! network namespace, served here with the engine's own stack. The client identity comes from
//! the listener (a [`PresetClient`] put on every request), never from request headers; requests
//! must carry basic auth with the exec's token. The nested client's host is the container: its
//! attachables are served by the engine itself over an in-memory pipe, on the container's rootfs.

use std::convert::Infallible;
use std::sync::Arc;

use dagr_attach::{ContainerRoot, HostProviders};
use dagr_metadata::{ClientMetadata, basic_auth_matches};
use dagr_session::{BoxBody, PresetClient, error_response};
use dagr_worker::{NestedClient, NestedClients, NestedError, NestedServing};
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use crate::routes::{Engine, Route};
use crate::server::spawn_conn;
use crate::stack::EngineService;

/// Serves nested clients for the worker. The worker is opened before the stack it calls back
/// into exists, so the stack is handed over once built ([`NestedServer::serve_with`]); until
/// then (only during start-up, before any listener accepts) nested execs are refused.
pub struct NestedServer {
    handle: tokio::runtime::Handle,
    stack: std::sync::OnceLock<NestedStack>,
}

/// The engine's own stack, as nested clients reach it.
struct NestedStack {
    service: EngineService,
    engine: Arc<Engine>,
}

impl NestedServer {
    pub fn new(handle: tokio::runtime::Handle) -> Self {
        NestedServer {
            handle,
            stack: std::sync::OnceLock::new(),
        }
    }

    /// Serves nested clients with `service` from now on (called once, when the stack is built).
    pub fn serve_with(&self, service: EngineService, engine: Arc<Engine>) {
        let _ = self.stack.set(NestedStack { service, engine });
    }

    /// The engine's stack for one nested client: basic auth with its token, then its identity.
    fn client_service(service: &EngineService, md: Arc<ClientMetadata>) -> EngineService {
        let inner = service.clone();
        BoxCloneSyncService::new(tower::service_fn(move |mut req: Request<Incoming>| {
            let inner = inner.clone();
            let md = md.clone();
            async move {
                let authorization = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(http::HeaderValue::as_bytes);
                if !basic_auth_matches(authorization, &md.client_secret_token)
                    && !is_telemetry_export(&req)
                {
                    let mut resp: Response<BoxBody> = error_response(
                        StatusCode::UNAUTHORIZED,
                        "nested clients authenticate with basic auth: user $DAGGER_SESSION_TOKEN",
                    );
                    resp.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static("Basic realm=\"dagr nested client\""),
                    );
                    return Ok::<_, Infallible>(resp);
                }
                req.extensions_mut().insert(PresetClient(md));
                inner.oneshot(req).await
            }
        }))
    }
}

impl NestedClients for NestedServer {
    fn serve(
        &self,
        listener: std::net::TcpListener,
        client: NestedClient,
    ) -> BoxFuture<'_, Result<NestedServing, NestedError>> {
        Box::pin(async move {
            let stack = self.stack.get().ok_or(NestedError::Starting)?;
            listener
                .set_nonblocking(true)
                .map_err(NestedError::Listener)?;
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(NestedError::Listener)?;
            let md = Arc::new(ClientMetadata {
                client_id: client.client_id.clone(),
                client_secret_token: client.token.clone(),
                session_id: client.session_id.clone(),
                client_hostname: client.hostname.clone(),
                client_version: env!("CARGO_PKG_VERSION").to_owned(),
                labels: Default::default(),
                ..Default::default()
            });
            let connections: Connections = Arc::default();

            // The container as the nested client's host: attachables over an in-memory pipe,
            // through the normal /sessionAttachables route, before the process can make its
            // first request.
            let (engine_side, client_side) = tokio::io::duplex(1 << 20);
            connections
                .lock()
                .push(spawn_conn(engine_side, &stack.service, &stack.engine, None));
            let providers = HostProviders {
                root: client.rootfs.clone(),
                allow_send: true,
                container: Some(ContainerRoot {
                    rootfs: client.rootfs.clone(),
                    workdir: client.workdir.clone(),
                    pid_file: Some(client.pid_file.clone()),
                }),
                // A container has no user terminal, and lends no network of its own (it is in
                // the engine's).
                terminal: None,
                tunnel: None,
                // Its own: nothing read from one container is reused for another.
                host_id: dagr_attach::random_host_id(),
            };
            let attached = match dagr_attach::attach(client_side, &md, providers).await {
                Ok(attached) => attached,
                Err(e) => {
                    abort_all(&connections);
                    return Err(NestedError::Attach {
                        source: Box::new(e),
                    });
                }
            };
            let attach_task = self.handle.spawn(async move {
                if let Err(e) = attached.serve().await {
                    tracing::debug!(error = %e, "nested attachables ended");
                }
            });

            // A module function call: the API answers `currentFunctionCall` from it.
            let client_ref =
                dagr_metadata::ClientRef::new(client.session_id.clone(), client.client_id.clone());
            let modules = stack.engine.query.api().services().clone();
            if let Some(call) = &client.call {
                modules.modules.enter_call(client_ref.clone(), call);
            }
            let service = Self::client_service(&stack.service, md);
            let engine = stack.engine.clone();
            let conns = connections.clone();
            let accept_task = self.handle.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let task = spawn_conn(stream, &service, &engine, None);
                            let mut list = conns.lock();
                            list.retain(|t| !t.is_finished());
                            list.push(task);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "nested accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    }
                }
            });
            Ok(NestedServing::new(move || {
                modules.modules.leave_call(&client_ref);
                accept_task.abort();
                attach_task.abort();
                abort_all(&connections);
            }))
        })
    }
}

/// The connection tasks of one nested client (its attachables pipe and its API connections).
type Connections = Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

fn abort_all(connections: &Connections) {
    for c in connections.lock().drain(..) {
        c.abort();
    }
}

/// An OTLP export from the SDK inside the container (HTTP `/v1/traces`, `/v1/logs`, or the
/// gRPC collector services): exporters send no credentials, and an export can only add
/// telemetry, so the exec's listener takes them without its token.
fn is_telemetry_export(req: &Request<Incoming>) -> bool {
    let path = req.uri().path();
    Route::from_path(path).is_some_and(Route::is_open_to_nested_exporters)
        || path.starts_with("/opentelemetry.proto.collector.trace.v1.TraceService/")
        || path.starts_with("/opentelemetry.proto.collector.logs.v1.LogsService/")
}
