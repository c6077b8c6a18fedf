//! The local session proxy of `dagr run` and `dagr session` (spec section 6): listens on
//! `127.0.0.1:0`, requires basic auth whose username is the session token, and forwards
//! `POST /query` to the engine on the CLI's own client connection (which adds the metadata header).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

type ProxyBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Largest request body the proxy forwards.
const MAX_BODY: usize = 32 << 20;

/// A running proxy. [`SessionProxy::stop`] ends it and every connection it serves; dropping it
/// does the same without waiting.
pub struct SessionProxy {
    pub port: u16,
    pub token: String,
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SessionProxy {
    fn drop(&mut self) {
        if let Some(a) = &self.accept {
            a.abort();
        }
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
        let accept = tokio::spawn(async move {
            // Connection tasks live in this set, so aborting the accept task ends them all and
            // releases their handles on the client.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "session proxy accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                };
                let _ = stream.set_nodelay(true);
                let client = client.clone();
                let expected = expected.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let client = client.clone();
                        let expected = expected.clone();
                        async move { Ok::<_, Infallible>(handle(&client, &expected, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(SessionProxy {
            port,
            token,
            accept: Some(accept),
        })
    }

    /// Stops accepting and ends every proxied connection; returns once they are all gone.
    pub async fn stop(mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
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

/// The username of a `Basic` authorization header, if well-formed.
fn basic_user(req: &Request<Incoming>) -> Option<String> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    Some(
        decoded
            .split_once(':')
            .map_or(decoded.clone(), |(u, _)| u.to_owned()),
    )
}

async fn handle(
    client: &dagr_client::Client,
    token: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let authorized =
        basic_user(&req).is_some_and(|user| bool::from(user.as_bytes().ct_eq(token.as_bytes())));
    if !authorized {
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
    let forward = Request::post("/query")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body));
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
