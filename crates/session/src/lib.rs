//! Scoping a request to a client: [`ClientScopeLayer`] is a tower layer that decodes
//! `X-Dagger-Client-Metadata`, applies the [`ScopePolicy`] (minimum client version), gets or
//! initializes the session and client in the [`SessionRegistry`], and puts a [`RequestScope`] into
//! the request's extensions. The scope holds the request's in-flight guard; the layer also keeps one
//! in the response body, so a request counts as in flight until its response has been sent (or the
//! connection dropped), and a handler that hands the scope to a task (the hijacked attachables
//! connection) keeps it in flight for as long as that task holds it.
//!
//! Refusals are answered here as 4xx JSON `{"errors":[{"message":...}]}` ([`error_response`]);
//! this is the one place where scoping errors become HTTP statuses.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use dagr_engine_state::{ActiveRequest, Client, Session, SessionRegistry, StateError};
use dagr_metadata::{CLIENT_METADATA_HEADER, ClientMetadata, MetadataError};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;

/// The body type of every response the engine's HTTP side produces.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request was refused before reaching a route.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("incompatible client version {client}: this engine needs at least {minimum}")]
    IncompatibleVersion { client: String, minimum: String },
    #[error(transparent)]
    State(#[from] StateError),
}

impl ScopeError {
    pub fn status(&self) -> StatusCode {
        match self {
            ScopeError::Metadata(_) | ScopeError::IncompatibleVersion { .. } => {
                StatusCode::BAD_REQUEST
            }
            ScopeError::State(StateError::TokenMismatch { .. }) => StatusCode::UNAUTHORIZED,
            ScopeError::State(StateError::SessionRemoved(_)) => StatusCode::GONE,
            ScopeError::State(StateError::ShuttingDown) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A JSON error response `{"errors":[{"message":...}]}` with the given status.
pub fn error_response(status: StatusCode, message: &str) -> Response<BoxBody> {
    let body = serde_json::json!({ "errors": [ { "message": message } ] });
    let mut resp = Response::new(full_body(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A complete in-memory body as a [`BoxBody`].
pub fn full_body(bytes: Bytes) -> BoxBody {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What the engine requires of a client before serving it.
#[derive(Debug, Clone)]
pub struct ScopePolicy {
    /// Clients older than this are refused. Versions that are not semver (dev builds) pass.
    pub min_client_version: semver::Version,
}

impl ScopePolicy {
    pub fn check_version(&self, version: &str) -> Result<(), ScopeError> {
        let trimmed = version.trim().trim_start_matches('v');
        match semver::Version::parse(trimmed) {
            Ok(v) if v < self.min_client_version => Err(ScopeError::IncompatibleVersion {
                client: version.to_owned(),
                minimum: self.min_client_version.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// The client a request belongs to, in the request's extensions. Cloning it (into a task) keeps the
/// request in flight until the clone is dropped.
#[derive(Debug, Clone)]
pub struct RequestScope {
    active: Arc<ActiveRequest>,
    metadata: Arc<ClientMetadata>,
}

impl RequestScope {
    pub fn session(&self) -> &Arc<Session> {
        self.active.session()
    }
    pub fn client(&self) -> &Arc<Client> {
        self.active.client()
    }
    pub fn registry(&self) -> &SessionRegistry {
        self.active.registry()
    }
    pub fn metadata(&self) -> &ClientMetadata {
        &self.metadata
    }
    /// The (session, client) pair this request is scoped to.
    pub fn client_ref(&self) -> dagr_metadata::ClientRef {
        dagr_metadata::ClientRef::new(self.session().id(), self.client().id())
    }
    /// A separate in-flight guard for work that outlives this request.
    pub fn hold(&self) -> Result<ActiveRequest, StateError> {
        self.active.another()
    }
}

/// A client identity decided by the connection a request arrived on (a nested exec's own
/// listener), not by the request: when a request carries it in its extensions, the metadata
/// header is ignored. Only the engine's own listener code inserts it.
#[derive(Debug, Clone)]
pub struct PresetClient(pub Arc<ClientMetadata>);

/// Scopes every request passing through to a client; see the crate docs.
#[derive(Clone)]
pub struct ClientScopeLayer {
    registry: SessionRegistry,
    policy: Arc<ScopePolicy>,
}

impl ClientScopeLayer {
    pub fn new(registry: SessionRegistry, policy: ScopePolicy) -> Self {
        ClientScopeLayer {
            registry,
            policy: Arc::new(policy),
        }
    }

    /// Scopes a request of a client whose identity the connection decided.
    pub fn scope_preset(&self, md: &Arc<ClientMetadata>) -> Result<RequestScope, ScopeError> {
        let active = self.registry.begin_request(md)?;
        Ok(RequestScope {
            active: Arc::new(active),
            metadata: md.clone(),
        })
    }

    /// Decodes, checks and scopes one request's metadata.
    pub fn scope(&self, header: Option<&HeaderValue>) -> Result<RequestScope, ScopeError> {
        let raw = header.map(HeaderValue::as_bytes).unwrap_or_default();
        let md = ClientMetadata::decode(raw)?;
        self.policy.check_version(&md.client_version)?;
        let active = self.registry.begin_request(&md)?;
        Ok(RequestScope {
            active: Arc::new(active),
            metadata: Arc::new(md),
        })
    }
}

impl<S> tower::Layer<S> for ClientScopeLayer {
    type Service = ClientScope<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientScope {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`ClientScopeLayer`].
#[derive(Clone)]
pub struct ClientScope<S> {
    inner: S,
    layer: ClientScopeLayer,
}

impl<S, B> tower::Service<Request<B>> for ClientScope<S>
where
    S: tower::Service<Request<B>, Response = Response<BoxBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let scoped = match req.extensions().get::<PresetClient>() {
            Some(preset) => self.layer.scope_preset(&preset.0),
            None => self.layer.scope(req.headers().get(CLIENT_METADATA_HEADER)),
        };
        let scope = match scoped {
            Ok(scope) => scope,
            Err(err) => {
                tracing::debug!(error = %err, path = req.uri().path(), "request refused");
                let resp = error_response(err.status(), &err.to_string());
                return Box::pin(async move { Ok(resp) });
            }
        };
        let held = scope.active.clone();
        req.extensions_mut().insert(scope);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|body| {
                GuardedBody {
                    inner: body,
                    guard: Some(held),
                }
                .boxed_unsync()
            }))
        })
    }
}

/// A response body that keeps its request in flight until the body ends or is dropped.
struct GuardedBody {
    inner: BoxBody,
    guard: Option<Arc<ActiveRequest>>,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagr_engine_state::SessionState;
    use tower::{Layer as _, ServiceExt as _};

    fn md(version: &str) -> ClientMetadata {
        ClientMetadata {
            client_id: "c".into(),
            client_secret_token: "t".into(),
            session_id: "s".into(),
            client_version: version.into(),
            ..Default::default()
        }
    }

    fn layer(registry: &SessionRegistry) -> ClientScopeLayer {
        ClientScopeLayer::new(
            registry.clone(),
            ScopePolicy {
                min_client_version: semver::Version::new(0, 1, 0),
            },
        )
    }

    #[test]
    fn version_policy() {
        let p = ScopePolicy {
            min_client_version: semver::Version::new(0, 11, 0),
        };
        assert!(p.check_version("v0.11.8").is_ok());
        assert!(p.check_version("0.12.0").is_ok());
        assert!(p.check_version("devel (abc)").is_ok());
        assert!(p.check_version("").is_ok());
        let err = p.check_version("v0.10.3").expect_err("old");
        assert!(
            err.to_string()
                .starts_with("incompatible client version v0.10.3")
        );
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn scoped_request_stays_in_flight_until_body_ends() {
        let registry = SessionRegistry::new();
        let svc = layer(&registry).layer(tower::service_fn(|req: Request<()>| async move {
            let scope = req
                .extensions()
                .get::<RequestScope>()
                .expect("scoped")
                .clone();
            assert_eq!(scope.client().active_requests(), 1);
            Ok::<_, std::convert::Infallible>(Response::new(full_body(Bytes::from_static(b"ok"))))
        }));
        let req = Request::builder()
            .header(CLIENT_METADATA_HEADER, md("0.1.0").encode())
            .body(())
            .expect("request");
        let resp = svc.oneshot(req).await.expect("call");
        let session = registry.session("s").expect("session");
        assert_eq!(session.state(), SessionState::Initialized);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        session.torn_down().await;
        assert_eq!(session.state(), SessionState::Removed);
    }

    #[tokio::test]
    async fn refusals_are_json_with_status() {
        let registry = SessionRegistry::new();
        let svc = layer(&registry).layer(tower::service_fn(|_req: Request<()>| async move {
            Ok::<_, std::convert::Infallible>(Response::new(full_body(Bytes::new())))
        }));
        let cases: Vec<(Option<String>, StatusCode, &str)> = vec![
            (
                None,
                StatusCode::BAD_REQUEST,
                "missing x-dagger-client-metadata",
            ),
            (
                Some("%%%".into()),
                StatusCode::BAD_REQUEST,
                "not valid base64",
            ),
            (
                Some(md("0.0.1").encode()),
                StatusCode::BAD_REQUEST,
                "incompatible client version",
            ),
        ];
        for (header, status, needle) in cases {
            let mut b = Request::builder();
            if let Some(h) = header {
                b = b.header(CLIENT_METADATA_HEADER, h);
            }
            let resp = svc
                .clone()
                .oneshot(b.body(()).expect("request"))
                .await
                .expect("call");
            assert_eq!(resp.status(), status);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let msg = v["errors"][0]["message"].as_str().expect("message");
            assert!(msg.contains(needle), "{msg} should contain {needle}");
        }
    }
}
