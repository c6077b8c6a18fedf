//! The engine's HTTP routes: [`Route`], the one list of the paths it serves (the stack's steer,
//! the handlers and the metrics' route labels all go by it), and the handlers of the scoped ones
//! (`/query`, `/sessionAttachables`, `/shutdown`). A scoped request arrives at its handler with a
//! [`RequestScope`] (see `dagr-session`).

use std::sync::Arc;

use bytes::Bytes;
use dagr_attach::AttachablesClient;
use dagr_engine_state::SessionRegistry;
use dagr_session::{BoxBody, RequestScope, error_response, full_body};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use crate::metrics::EngineMetrics;
use crate::query::QueryEngine;

/// Largest `/query` body accepted.
const MAX_QUERY_BODY: usize = dagr_api::MAX_QUERY_BYTES;

/// A path the engine serves over HTTP (gRPC is steered by content type, not by path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/query`: GraphQL (scoped).
    Query,
    /// `/sessionAttachables`: a client's attachables connection (scoped).
    SessionAttachables,
    /// `/shutdown`: a client is done, or ends its session (scoped).
    Shutdown,
    /// `/metrics`: Prometheus text, without a metadata header.
    Metrics,
    /// `/v1/traces`: OTLP/HTTP span exports (from SDKs in nested execs), without a metadata header.
    OtlpTraces,
    /// `/v1/logs`: OTLP/HTTP log exports, without a metadata header.
    OtlpLogs,
    /// `/cache/usage`: the cache's usage by kind (JSON), without a metadata header.
    CacheUsage,
    /// `/cache/prune`: removes what no session holds (POST, JSON), without a metadata header.
    CachePrune,
}

impl Route {
    /// Every route, in declaration order (`ALL[route as usize] == route`).
    pub const ALL: [Route; 8] = [
        Route::Query,
        Route::SessionAttachables,
        Route::Shutdown,
        Route::Metrics,
        Route::OtlpTraces,
        Route::OtlpLogs,
        Route::CacheUsage,
        Route::CachePrune,
    ];

    pub const fn path(self) -> &'static str {
        match self {
            Route::Query => "/query",
            Route::SessionAttachables => dagr_metadata::ATTACHABLES_PATH,
            Route::Shutdown => "/shutdown",
            Route::Metrics => "/metrics",
            Route::OtlpTraces => dagr_telemetry::OTLP_TRACES_PATH,
            Route::OtlpLogs => dagr_telemetry::OTLP_LOGS_PATH,
            Route::CacheUsage => "/cache/usage",
            Route::CachePrune => "/cache/prune",
        }
    }

    /// Whether a nested client's listener serves it without the exec's token: the OTLP
    /// exports of the SDK inside (an exporter sends no credentials; it can only add telemetry).
    pub fn is_open_to_nested_exporters(self) -> bool {
        matches!(self, Route::OtlpTraces | Route::OtlpLogs)
    }

    /// The route of exactly this path.
    pub fn from_path(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.path() == path)
    }
}

/// Everything the routes share.
pub struct Engine {
    pub registry: SessionRegistry,
    pub metrics: EngineMetrics,
    pub query: QueryEngine,
    /// Where OTLP exports are published (the engine's telemetry hub).
    pub otlp: dagr_telemetry::OtlpReceiver,
    pub remote_cache: crate::remote_cache::RemoteCaches,
}

/// Largest OTLP/HTTP export body accepted.
const MAX_OTLP_BODY: usize = 16 << 20;

/// `POST /v1/traces` and `POST /v1/logs`: an OTLP/HTTP export (protobuf), published to the
/// traces its records name.
pub async fn otlp_export(engine: Arc<Engine>, req: Request<Incoming>) -> Response<BoxBody> {
    let path = req.uri().path().to_owned();
    let encoding = dagr_telemetry::OtlpEncoding::of_content_type(
        req.headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let (parts, body) = req.into_parts();
    let body = match post_body(&path, &parts.method, body, MAX_OTLP_BODY).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    match engine.otlp.export_http(&path, encoding, &body) {
        Some(Ok(answer)) => {
            let mut resp = Response::new(full_body(Bytes::from(answer)));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(encoding.content_type()),
            );
            resp
        }
        Some(Err(e)) => error_response(StatusCode::BAD_REQUEST, &e.to_string()),
        None => error_response(StatusCode::NOT_FOUND, &format!("no OTLP signal at {path}")),
    }
}

/// The body of a POST to `path`, at most `limit` bytes, or the error answer (405 for another
/// method, 413 for a body too large or broken).
async fn post_body(
    path: &str,
    method: &Method,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, Response<BoxBody>> {
    if *method != Method::POST {
        return Err(error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} takes POST, not {method}"),
        ));
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("reading the {path} body failed: {e}"),
        )),
    }
}

/// A client's attachables connection, from the moment its request is accepted (a second one
/// is then refused): pending until the handshake completes (the client may send a request
/// first: it has written its ack when it returns), then ready, then gone once it closed.
#[derive(Clone)]
pub(crate) struct AttachablesSlot(pub(crate) Arc<tokio::sync::watch::Sender<Attachables>>);

#[derive(Clone)]
pub(crate) enum Attachables {
    Pending,
    Ready(AttachablesClient),
    Gone,
}

/// `POST /query`: executes a GraphQL request for the scope's client.
pub async fn query(
    engine: Arc<Engine>,
    scope: RequestScope,
    req: Request<Incoming>,
) -> Response<BoxBody> {
    let (parts, body) = req.into_parts();
    let body = match post_body(Route::Query.path(), &parts.method, body, MAX_QUERY_BODY).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let (status, json) = engine.query.execute(&scope, &parts.headers, &body).await;
    json_response(status, json)
}

/// `/sessionAttachables`: hijacks the connection as the client's attachables (one per client).
pub fn attachables(scope: RequestScope, mut req: Request<Incoming>) -> Response<BoxBody> {
    let client = scope.client().clone();
    let slot = Arc::new(tokio::sync::watch::Sender::new(Attachables::Pending));
    let claimed = client.with_extensions(|ext| {
        if ext.get::<AttachablesSlot>().is_some() {
            false
        } else {
            ext.insert(AttachablesSlot(slot.clone()));
            true
        }
    });
    if !claimed {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!(
                "client {} of session {} already has an attachables connection",
                client.id(),
                client.session_id()
            ),
        );
    }
    let (resp, pending) = match dagr_attach::accept(&mut req) {
        Ok(accepted) => accepted,
        Err(e) => {
            // Let the client try again with a well-formed request.
            client.with_extensions(|ext| ext.remove::<AttachablesSlot>());
            return error_response(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    // The hijacked connection counts as an in-flight request of the client until it closes.
    let held = match scope.hold() {
        Ok(h) => h,
        Err(e) => {
            slot.send_replace(Attachables::Gone);
            return error_response(StatusCode::GONE, &e.to_string());
        }
    };
    let session = scope.session().clone();
    tokio::spawn(async move {
        match pending.finish().await {
            Ok(conn) => {
                slot.send_replace(Attachables::Ready(conn.clone()));
                tracing::debug!(
                    client = client.id(),
                    session = session.id(),
                    "attachables connected"
                );
                tokio::select! {
                    () = conn.closed() => {
                        tracing::debug!(client = client.id(), "attachables connection closed");
                    }
                    () = session.removed() => {
                        // Session teardown closes the client's callbacks too.
                        conn.close();
                    }
                }
                slot.send_replace(Attachables::Gone);
            }
            Err(e) => {
                slot.send_replace(Attachables::Gone);
                tracing::warn!(client = client.id(), error = %e, "attachables handshake failed");
            }
        }
        drop(held);
    });
    resp.map(|b| b.map_err(Into::into).boxed_unsync())
}

/// `POST /shutdown[?immediate=true]`: the main client ends its session (now with `immediate`).
pub async fn shutdown(
    engine: Arc<Engine>,
    scope: RequestScope,
    req: Request<Incoming>,
) -> Response<BoxBody> {
    if req.method() != Method::POST {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "{} takes POST, not {}",
                Route::Shutdown.path(),
                req.method()
            ),
        );
    }
    let immediate = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "immediate=true"));
    if scope.client().is_main() && immediate {
        // Tear the session down now, whatever is still in flight.
        let id = scope.session().id().to_owned();
        drop(scope);
        engine.registry.remove_session(&id).await;
    }
    // Without `immediate` there is nothing to drain before answering: the session ends when the
    // main client closes its attachables connection (its last in-flight request).
    let mut resp = Response::new(full_body(Bytes::new()));
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// A JSON answer.
fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<BoxBody> {
    let mut resp = Response::new(full_body(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `GET /cache/usage`: the cache's usage by kind.
pub async fn cache_usage(engine: Arc<Engine>, req: Request<Incoming>) -> Response<BoxBody> {
    if req.method() != http::Method::GET {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "use GET /cache/usage");
    }
    match crate::cache::usage(engine.query.api()).await {
        Ok(usage) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&usage).unwrap_or_default(),
        ),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// `POST /cache/prune` with a JSON [`crate::cache::PruneRequest`] (an empty body prunes
/// everything no session holds).
pub async fn cache_prune(engine: Arc<Engine>, req: Request<Incoming>) -> Response<BoxBody> {
    let (parts, body) = req.into_parts();
    let body = match post_body(parts.uri.path(), &parts.method, body, 64 << 10).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let request = if body.is_empty() {
        crate::cache::PruneRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid prune request: {e}"),
                );
            }
        }
    };
    match crate::cache::prune(engine.query.api(), request).await {
        Ok(report) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&report).unwrap_or_default(),
        ),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes_by_path() {
        for (i, route) in Route::ALL.into_iter().enumerate() {
            assert_eq!(route as usize, i);
            assert_eq!(Route::from_path(route.path()), Some(route));
        }
        assert_eq!(Route::from_path("/query"), Some(Route::Query));
        assert_eq!(Route::from_path("/query/"), None);
        assert_eq!(Route::from_path("/"), None);
    }
}
