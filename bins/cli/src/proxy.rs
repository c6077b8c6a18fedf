//! The local session proxy of `dagr run` and `dagr session`: listens on
//! `127.0.0.1:0`, requires basic auth whose username is the session token, and forwards
//! `POST /query` to the engine on the CLI's own client connection (which adds the metadata
//! header; the caller's `traceparent` is kept).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type ProxyBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Largest request body the proxy forwards.
const MAX_BODY: usize = 32 << 20;

/// A running proxy. [`SessionProxy::stop`] ends it and every connection it serves; dropping it
/// does the same without waiting.
pub struct SessionProxy {
    pub port: u16,
    pub token: String,
    /// `true` (or dropped) stops every task of the proxy.
    stop: tokio::sync::watch::Sender<bool>,
    /// Yields `None` once every task of the proxy, and so every handle it had on the client,
    /// is gone (each task holds a sender and never sends).
    tasks_gone: tokio::sync::mpsc::Receiver<()>,
}

impl Drop for SessionProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Spawns the proxy's tasks (its accept loop, its connections and whatever hyper spawns for
/// them, e.g. HTTP/2 streams) so that all of them end on the stop signal and can be awaited.
#[derive(Clone)]
struct ProxyTasks {
    stop: tokio::sync::watch::Receiver<bool>,
    alive: tokio::sync::mpsc::Sender<()>,
}

impl ProxyTasks {
    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) {
        let mut stop = self.stop.clone();
        let alive = self.alive.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
            // The task's future (and what it captured) is dropped by now.
            drop(alive);
        });
    }
}

impl<F> hyper::rt::Executor<F> for ProxyTasks
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.spawn(async move {
            let _ = fut.await;
        });
    }
}

/// A random token: 32 hex characters from the OS RNG.
pub fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SessionProxy {
    pub async fn start(client: Arc<dagr_client::Client>) -> anyhow::Result<SessionProxy> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let port = listener.local_addr()?.port();
        let token = random_token();
        let expected = Arc::new(token.clone());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (alive, tasks_gone) = tokio::sync::mpsc::channel(1);
        let tasks = ProxyTasks {
            stop: stop_rx,
            alive,
        };
        let spawner = tasks.clone();
        spawner.spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "session proxy accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let client = client.clone();
                let expected = expected.clone();
                let executor = tasks.clone();
                tasks.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let client = client.clone();
                        let expected = expected.clone();
                        async move { Ok::<_, Infallible>(handle(&client, &expected, req).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(executor);
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(SessionProxy {
            port,
            token,
            stop,
            tasks_gone,
        })
    }

    /// Stops accepting and ends every proxied connection; returns once all of the proxy's tasks
    /// are gone, so its handles on the client are released.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks_gone.recv().await.is_some() {}
    }
}

fn text(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "errors": [ { "message": msg } ] }).to_string();
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The W3C trace context header.
const TRACEPARENT: &str = dagr_client::TraceParent::HEADER;

async fn handle(
    client: &dagr_client::Client,
    token: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(http::HeaderValue::as_bytes);
    if !dagr_metadata::basic_auth_matches(authorization, token) {
        let mut resp = text(
            StatusCode::UNAUTHORIZED,
            "missing or wrong session token (basic auth username)",
        );
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Basic realm=\"dagr session\""),
        );
        return resp;
    }
    if req.uri().path() != "/query" {
        return text(
            StatusCode::NOT_FOUND,
            &format!(
                "the session proxy only serves /query, not {}",
                req.uri().path()
            ),
        );
    }
    if req.method() != http::Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "/query takes POST");
    }
    // The caller's span (an SDK's `traceparent`) goes along: the engine's spans for the query
    // hang under it. Without one, the client adds its own.
    let traceparent = req.headers().get(TRACEPARENT).cloned();
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("reading the request failed: {e}"),
            );
        }
    };
    let mut forward =
        Request::post("/query").header(http::header::CONTENT_TYPE, "application/json");
    if let Some(traceparent) = traceparent {
        forward = forward.header(TRACEPARENT, traceparent);
    }
    let forward = forward.body(Full::new(body));
    let forward = match forward {
        Ok(f) => f,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("building the request failed: {e}"),
            );
        }
    };
    match client.request(forward).await {
        Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed_unsync()),
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            &format!("forwarding to the engine failed: {e}"),
        ),
    }
}
