//! The one tower service stack every listener serves (the request path of ARCHITECTURE.md):
//!
//! ```text
//! trace -> count by route/status -> steer:
//!   HTTP/2 + application/grpc*         -> tonic routes (health, Info)
//!   Route::Metrics                     -> Prometheus text (no metadata header)
//!   Route::{OtlpTraces, OtlpLogs}      -> OTLP/HTTP exports into the telemetry hub (no header)
//!   Route::{CacheUsage, CachePrune}    -> `dagr du` / `dagr prune` (no header)
//!   Route::{Query, SessionAttachables, Shutdown} -> ClientScopeLayer -> its handler
//!   anything else                      -> 404 JSON
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use dagr_session::{BoxBody, ClientScopeLayer, RequestScope, error_response, full_body};
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tower::ServiceExt as _;
use tower::steer::Steer;
use tower::util::BoxCloneSyncService;

use crate::metrics::route_label;
use crate::routes::{self, Engine, Route};

pub type EngineService = BoxCloneSyncService<Request<Incoming>, Response<BoxBody>, Infallible>;

fn is_grpc(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_2
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Where the steer sends a request: gRPC, not found, or the service of a [`Route`] (at
/// `ROUTES + route as usize`).
const GRPC: usize = 0;
const NOT_FOUND: usize = 1;
const ROUTES: usize = 2;

/// Builds the engine's service stack.
pub fn build(
    engine: Arc<Engine>,
    grpc: tonic::service::Routes,
    scope: ClientScopeLayer,
) -> EngineService {
    let grpc = BoxCloneSyncService::new(tower::ServiceExt::<Request<Incoming>>::map_response(
        grpc,
        |resp: Response<tonic::body::Body>| {
            resp.map(|body| body.map_err(dagr_session::BoxError::from).boxed_unsync())
        },
    ));
    let not_found = BoxCloneSyncService::new(tower::service_fn(|req: Request<Incoming>| {
        let msg = format!("no route for {} {}", req.method(), req.uri().path());
        async move { Ok::<_, Infallible>(error_response(StatusCode::NOT_FOUND, &msg)) }
    }));
    let mut services = vec![grpc, not_found];
    services.extend(
        Route::ALL
            .into_iter()
            .map(|route| route_service(route, &engine, &scope)),
    );
    let steer = Steer::new(services, |req: &Request<Incoming>, _: &[_]| {
        if is_grpc(req) {
            return GRPC;
        }
        Route::from_path(req.uri().path()).map_or(NOT_FOUND, |route| ROUTES + route as usize)
    });
    let counted = CountRequests {
        inner: steer,
        engine,
    };
    let traced = tower::ServiceBuilder::new()
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(
                    tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::DEBUG),
                )
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG),
                ),
        )
        .service(counted)
        .map_response(|resp: Response<_>| resp.map(|b| b.boxed_unsync()));
    BoxCloneSyncService::new(traced)
}

/// The service answering one route.
fn route_service(route: Route, engine: &Arc<Engine>, scope: &ClientScopeLayer) -> EngineService {
    match route {
        Route::Metrics => {
            let engine = engine.clone();
            BoxCloneSyncService::new(tower::service_fn(move |_req: Request<Incoming>| {
                let api = engine.query.api().services();
                let network = api.worker().network().stats();
                let mut gauges = vec![
                    (
                        "dagr_services_running",
                        "Service containers running (all sessions).",
                        api.running.running() as u64,
                    ),
                    (
                        "dagr_network_addresses_in_use",
                        "Exec addresses on the engine's bridge given out (the pool's included).",
                        network.addresses as u64,
                    ),
                    (
                        "dagr_network_dns_names",
                        "Names published in the engine's DNS.",
                        network.names as u64,
                    ),
                    (
                        "dagr_network_dns_views",
                        "Execs with a view in the engine's DNS (those that bind services).",
                        network.sources as u64,
                    ),
                    (
                        "dagr_network_pooled",
                        "Network namespaces prepared ahead of time.",
                        network.pooled as u64,
                    ),
                ];
                let mut counters = engine.remote_cache.counters();
                counters.push((
                    "dagr_execs_run_total",
                    "Exec ops run (cache hits and remote cache imports run none).",
                    api.worker().execs_run(),
                ));
                let host = api.worker().host_sync_stats();
                counters.extend([
                    ("dagr_host_reads_total", "Host directory reads.", host.reads),
                    (
                        "dagr_host_reads_unchanged_total",
                        "Host directory reads that found the tree as the last read left it.",
                        host.unchanged,
                    ),
                    (
                        "dagr_host_files_fetched_total",
                        "Files whose content host directory reads transferred.",
                        host.files_fetched,
                    ),
                    (
                        "dagr_host_bytes_fetched_total",
                        "Bytes of content host directory reads transferred.",
                        host.bytes_fetched,
                    ),
                ]);
                // Where uncached execs spend their time (divide by the run count for a mean).
                let phases = api.worker().exec_phases();
                counters.push((
                    "dagr_exec_phase_runs_total",
                    "Exec runs whose phases the dagr_exec_*_microseconds_total counters sum.",
                    phases.runs,
                ));
                counters.push((
                    "dagr_exec_placed_launcher_runs_total",
                    "Exec runs of them on a launcher started ahead, already in the exec's cgroups.",
                    phases.placed_runs,
                ));
                for (phase, help, time) in exec_phase_metrics(&phases) {
                    counters.push((phase, help, micros(time)));
                }
                let writes = api.solver.index_writes();
                let snapshot_syncs = api.worker().snapshots().sync_stats();
                counters.extend([
                    (
                        "dagr_index_writes_total",
                        "Results written to the solver's index (each durable with the next index sync).",
                        writes.count,
                    ),
                    (
                        "dagr_index_write_microseconds_total",
                        "Time spent writing results to the solver's index.",
                        micros(writes.time),
                    ),
                    (
                        "dagr_index_syncs_total",
                        "Group commits of the solver's index (one durable commit each).",
                        writes.syncs,
                    ),
                    (
                        "dagr_index_sync_microseconds_total",
                        "Time spent in group commits of the solver's index.",
                        micros(writes.sync_time),
                    ),
                    (
                        "dagr_snapshot_syncs_total",
                        "Group commits of the snapshots (a syncfs, then one durable commit).",
                        snapshot_syncs.syncs,
                    ),
                    (
                        "dagr_snapshot_sync_microseconds_total",
                        "Time spent in group commits of the snapshots.",
                        micros(snapshot_syncs.time),
                    ),
                ]);
                gauges.push((
                    "dagr_cache_unsynced",
                    "1 while results (snapshots or index entries) wait for the next group commit.",
                    u64::from(snapshot_syncs.commits_pending || writes.unsynced),
                ));
                let text = engine.metrics.render(&engine.registry, &gauges, &counters);
                async move {
                    let mut resp = Response::new(full_body(Bytes::from(text)));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            }))
        }
        Route::OtlpTraces | Route::OtlpLogs => {
            let engine = engine.clone();
            BoxCloneSyncService::new(tower::service_fn(move |req: Request<Incoming>| {
                let engine = engine.clone();
                async move { Ok::<_, Infallible>(routes::otlp_export(engine, req).await) }
            }))
        }
        Route::CacheUsage | Route::CachePrune => {
            let engine = engine.clone();
            BoxCloneSyncService::new(tower::service_fn(move |req: Request<Incoming>| {
                let engine = engine.clone();
                async move {
                    Ok::<_, Infallible>(match route {
                        Route::CacheUsage => routes::cache_usage(engine, req).await,
                        _ => routes::cache_prune(engine, req).await,
                    })
                }
            }))
        }
        Route::Query => scoped(engine, scope, |engine, scope, req| {
            Box::pin(routes::query(engine, scope, req))
        }),
        Route::SessionAttachables => scoped(engine, scope, |_, scope, req| {
            Box::pin(std::future::ready(routes::attachables(scope, req)))
        }),
        Route::Shutdown => scoped(engine, scope, |engine, scope, req| {
            Box::pin(routes::shutdown(engine, scope, req))
        }),
    }
}

/// The handler of a scoped route.
type ScopedHandler =
    fn(Arc<Engine>, RequestScope, Request<Incoming>) -> BoxFuture<'static, Response<BoxBody>>;

/// A handler behind [`ClientScopeLayer`], given the request's [`RequestScope`].
fn scoped(engine: &Arc<Engine>, scope: &ClientScopeLayer, handler: ScopedHandler) -> EngineService {
    let engine = engine.clone();
    let handle = tower::service_fn(move |req: Request<Incoming>| {
        let engine = engine.clone();
        async move {
            let Some(request_scope) = req.extensions().get::<RequestScope>().cloned() else {
                // ClientScopeLayer puts it there (or answers the request itself).
                return Ok::<_, Infallible>(error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "request was not scoped to a client",
                ));
            };
            Ok(handler(engine, request_scope, req).await)
        }
    });
    BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .layer(scope.clone())
            .service(handle),
    )
}

/// Counts answered requests by route and status for `dagr_http_requests_total`.
#[derive(Clone)]
struct CountRequests<S> {
    inner: S,
    engine: Arc<Engine>,
}

impl<S> tower::Service<Request<Incoming>> for CountRequests<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<BoxBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let route = route_label(req.uri().path(), is_grpc(&req));
        let engine = self.engine.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            engine.metrics.request_done(route, resp.status().as_u16());
            Ok(resp)
        })
    }
}

/// The exec phase counters: name, help and summed time of each phase.
fn exec_phase_metrics(
    phases: &dagr_worker::ExecPhaseTotals,
) -> [(&'static str, &'static str, std::time::Duration); 8] {
    let [
        mount,
        bundle,
        prestart,
        cgroup,
        spec,
        runtime,
        cleanup,
        commit,
    ] = phases.named().map(|(_, time)| time);
    [
        (
            "dagr_exec_mount_microseconds_total",
            "Exec preparation: writable snapshots mounted, volumes, secrets, bound services started.",
            mount,
        ),
        (
            "dagr_exec_bundle_microseconds_total",
            "Exec bundle preparation: rootfs, hosts/resolv.conf, user mounts, network namespace.",
            bundle,
        ),
        (
            "dagr_exec_prestart_microseconds_total",
            "Exec prestart hooks (nested clients).",
            prestart,
        ),
        (
            "dagr_exec_cgroup_microseconds_total",
            "Creating execs' cgroups.",
            cgroup,
        ),
        (
            "dagr_exec_spec_microseconds_total",
            "Building and writing execs' runtime specs.",
            spec,
        ),
        (
            "dagr_exec_runtime_microseconds_total",
            "The OCI runtime, from its spawn to the process's exit with its output read.",
            runtime,
        ),
        (
            "dagr_exec_cleanup_microseconds_total",
            "Removing execs' containers, mounts, network namespaces and bundles.",
            cleanup,
        ),
        (
            "dagr_exec_commit_microseconds_total",
            "Unmounting and committing execs' outputs.",
            commit,
        ),
    ]
}

fn micros(time: std::time::Duration) -> u64 {
    u64::try_from(time.as_micros()).unwrap_or(u64::MAX)
}
