//! The engine client library.
//!
//! [`connect`] opens a session on an engine at an [`EngineHost`] (`unix://`, `tcp://`, `stdio://`)
//! as described by [`ConnectOptions`], and returns a [`Client`] once the session is ready:
//! - connection B carries the session attachables (see `dagr-attach`): the engine reads host files
//!   relative to [`ConnectOptions::workdir`] through it; it is served by a task until [`Client::close`];
//! - connection A is HTTP/2 (prior knowledge); every [`Client::query`] and [`Client::request`] is a
//!   stream multiplexed on it and carries the `X-Dagger-Client-Metadata` header.
//!
//! [`ConnectOptions::terminal`] offers the user's terminal for interactive processes
//! ([`StdioTerminal`]: this process's stdin and stdout).
//!
//! Every request carries a W3C `traceparent` ([`ConnectOptions::traceparent`], else a new trace):
//! the engine's spans for it hang under it. [`Client::subscribe`] follows the spans and logs
//! of that trace ([`TelemetryFeed`]) on the same HTTP/2 connection; [`Client::close`] returns
//! once the feed has everything the session produced (bounded by [`DRAIN_LIMIT`]).
//!
//! Nested clients (inside a container) use [`Client::from_session_env`]: one
//! connection to `127.0.0.1:<port>` with basic auth `<token>:`, no attachables.

mod host;
mod telemetry;
mod terminal;
mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use dagr_attach::{AttachError, HostProviders, TerminalProvider};
pub use dagr_metadata::CacheOptionsEntry;
use dagr_metadata::{CLIENT_METADATA_HEADER, ClientMetadata};
pub use dagr_telemetry::TraceParent;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use host::{DialError, EngineHost, EngineHostError, image_container_name};
pub use telemetry::{DRAIN_LIMIT, TelemetryEvent, TelemetryFeed};
pub use terminal::StdioTerminal;
pub use tls::TlsFiles;

/// The remote caches named by Dagger's environment variables: `_EXPERIMENTAL_DAGGER_CACHE_CONFIG`
/// (read and written), `_EXPERIMENTAL_DAGGER_CACHE_IMPORT_CONFIG` and
/// `_EXPERIMENTAL_DAGGER_CACHE_EXPORT_CONFIG`, each `type=registry,ref=REF[,mode=max];...`
/// (`\;` for a `;` inside a value). `get` reads a variable. Returns (imports, exports).
#[allow(clippy::type_complexity)]
pub fn cache_config_from_env(
    get: impl Fn(&str) -> Option<String>,
) -> Result<(Vec<CacheOptionsEntry>, Vec<CacheOptionsEntry>), String> {
    let parse = |name: &str| -> Result<Vec<CacheOptionsEntry>, String> {
        let Some(value) = get(name).filter(|v| !v.is_empty()) else {
            return Ok(Vec::new());
        };
        let mut specs: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&';') => {
                    current.push(';');
                    chars.next();
                }
                ';' => specs.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        specs.push(current);
        let mut entries = Vec::new();
        for spec in specs.iter().filter(|s| !s.is_empty()) {
            let mut attrs = BTreeMap::new();
            for pair in spec.split(',') {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{name}: {pair:?} is not KEY=VALUE"))?;
                attrs.insert(k.to_owned(), v.to_owned());
            }
            let kind = attrs
                .remove("type")
                .ok_or_else(|| format!("{name}: {spec:?} has no type="))?;
            entries.push(CacheOptionsEntry { kind, attrs });
        }
        Ok(entries)
    };
    let mut imports = parse("_EXPERIMENTAL_DAGGER_CACHE_IMPORT_CONFIG")?;
    let mut exports = parse("_EXPERIMENTAL_DAGGER_CACHE_EXPORT_CONFIG")?;
    let both = parse("_EXPERIMENTAL_DAGGER_CACHE_CONFIG")?;
    imports.extend(both.iter().cloned());
    exports.extend(both);
    Ok((imports, exports))
}

/// What the transport of a failed connection can tell (`""`: nothing).
async fn explain(diagnosis: Option<host::Diagnosis>) -> String {
    match diagnosis {
        Some(d) => d.explain().await,
        None => String::new(),
    }
}

/// Error type of request bodies given to [`Client::request`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body type of the requests sent on the query connection.
type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Largest answer [`Client::query`] reads.
const MAX_QUERY_RESPONSE: usize = 512 << 20;

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    pub host: EngineHost,
    /// Join this session (random when `None`: a new session).
    pub session_id: Option<String>,
    /// Random when `None`.
    pub client_id: Option<String>,
    /// The client's secret token; random when `None`.
    pub token: Option<String>,
    /// Relative host paths the engine asks for are resolved against this directory.
    pub workdir: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub hostname: String,
    /// Open the attachables connection (false for nested clients, which have none).
    pub attach: bool,
    /// Let the engine write to the host (exports).
    pub allow_send: bool,
    /// The user's terminal, offered to the engine for interactive processes (`dagr terminal`);
    /// see [`StdioTerminal`].
    pub terminal: Option<Arc<dyn TerminalProvider>>,
    /// The span this client's work continues (e.g. the caller's `TRACEPARENT`); a new trace
    /// when `None`. Sent as the `traceparent` of every request that has none of its own.
    pub traceparent: Option<TraceParent>,
    /// Lends the engine this host's network (`Host.service`, `Host.tunnel`, `Service.up`,
    /// unix sockets); see [`dagr_attach::HostTunnel`]. `None`: the engine cannot reach it.
    pub tunnel: Option<Arc<dyn dagr_attach::TunnelProvider>>,
    /// Remote caches the session reads ([`cache_config_from_env`]).
    pub cache_imports: Vec<CacheOptionsEntry>,
    /// Remote caches the session's results are written to when it ends.
    pub cache_exports: Vec<CacheOptionsEntry>,
    /// This host's name in directory listings ([`HostProviders::host_id`]): the engine
    /// re-reads only what changed since the last read of the same directory by the same host.
    /// `None`: a random one, so nothing is shared with another session.
    pub host_id: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("session_id", &self.session_id)
            .field("client_id", &self.client_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("workdir", &self.workdir)
            .field("labels", &self.labels)
            .field("hostname", &self.hostname)
            .field("attach", &self.attach)
            .field("allow_send", &self.allow_send)
            .field("terminal", &self.terminal)
            .field("traceparent", &self.traceparent)
            .field("tunnel", &self.tunnel)
            .field("cache_imports", &self.cache_imports)
            .field("cache_exports", &self.cache_exports)
            .field("host_id", &self.host_id)
            .finish()
    }
}

/// Why connecting, a request or closing failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("HTTP/2 handshake with engine at {host} failed: {source}{transport}")]
    Handshake {
        host: String,
        source: hyper::Error,
        /// What the transport tells (`"; the connection helper printed: ..."`, `"; TLS: ..."`)
        /// or `""`.
        transport: String,
    },
    #[error("attaching to engine at {host} failed: {source}{transport}")]
    Attach {
        host: String,
        source: AttachError,
        transport: String,
    },
    #[error("invalid request for {path}: {reason}")]
    InvalidRequest { path: String, reason: String },
    #[error("request {path} to engine at {host} failed: {source}")]
    Request {
        host: String,
        path: String,
        source: hyper::Error,
    },
    #[error("reading the answer to {path} from engine at {host} failed: {source}")]
    Body {
        host: String,
        path: String,
        source: BoxError,
    },
    #[error("engine at {host} answered {status} to {path}: {message}")]
    Status {
        host: String,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("engine at {host} answered invalid JSON to {path}: {source}")]
    Json {
        host: String,
        path: String,
        source: serde_json::Error,
    },
    #[error("attachables connection to engine at {host} failed: {source}")]
    Attachables { host: String, source: AttachError },
    #[error("attachables task for engine at {host} failed: {reason}")]
    Task { host: String, reason: String },
}

/// The attachables connection being served.
struct Attachables {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), AttachError>>,
}

/// A connected client: queries ride on one HTTP/2 connection; the attachables (if any) are served
/// in the background until [`Client::close`] (or until the client is dropped).
pub struct Client {
    metadata: ClientMetadata,
    nested: bool,
    sender: Sender,
    traceparent: TraceParent,
    connection: JoinHandle<()>,
    attachables: Option<Attachables>,
    feeds: Vec<JoinHandle<()>>,
}

/// Sends requests on the query connection with the client's identity and trace (cloned into
/// the telemetry subscriptions' gRPC channel).
#[derive(Clone)]
pub(crate) struct Sender {
    host: String,
    /// Added to every request: the metadata header, or basic auth for nested clients.
    identity: (HeaderName, HeaderValue),
    /// Added to requests without a `traceparent` of their own.
    traceparent: HeaderValue,
    sender: SendRequest<RequestBody>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.sender.host)
            .field("client_id", &self.metadata.client_id)
            .field("session_id", &self.metadata.session_id)
            .field("nested", &self.nested)
            .field("attached", &self.attachables.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.connection.abort();
        for feed in &self.feeds {
            feed.abort();
        }
    }
}

/// 128 random bits as hex.
fn random_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Connects to an engine; returns once the session is ready (attachables accepted).
pub async fn connect(opts: ConnectOptions) -> Result<Client, ClientError> {
    let host = opts.host.to_string();
    let metadata = ClientMetadata {
        client_id: opts.client_id.unwrap_or_else(random_id),
        client_secret_token: opts.token.unwrap_or_else(random_id),
        session_id: opts.session_id.unwrap_or_else(random_id),
        client_hostname: opts.hostname,
        client_version: env!("CARGO_PKG_VERSION").to_string(),
        labels: opts.labels,
        cache_imports: opts.cache_imports,
        cache_exports: opts.cache_exports,
    };
    let identity = (
        HeaderName::from_static(CLIENT_METADATA_HEADER),
        HeaderValue::try_from(metadata.encode()).map_err(|e| ClientError::InvalidRequest {
            path: dagr_metadata::ATTACHABLES_PATH.to_string(),
            reason: format!("metadata header: {e}"),
        })?,
    );
    let attachables = if opts.attach {
        let io = opts.host.dial().await?;
        let diagnosis = io.diagnosis();
        let providers = HostProviders {
            root: opts.workdir,
            allow_send: opts.allow_send,
            container: None,
            terminal: opts.terminal.clone(),
            tunnel: opts.tunnel.clone(),
            host_id: opts
                .host_id
                .clone()
                .unwrap_or_else(dagr_attach::random_host_id),
        };
        let session = match dagr_attach::attach(io, &metadata, providers).await {
            Ok(session) => session,
            Err(source) => {
                return Err(ClientError::Attach {
                    host: host.clone(),
                    source,
                    transport: explain(diagnosis).await,
                });
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        // Dropping `stop` (the client dropped without close) also ends the connection gracefully.
        let task = tokio::spawn(session.serve_until(async move {
            let _ = stopped.await;
        }));
        Some(Attachables { stop, task })
    } else {
        None
    };
    let (sender, connection) = open_h2(&opts.host, &host).await?;
    let traceparent = opts.traceparent.unwrap_or_else(TraceParent::new_root);
    Ok(Client {
        metadata,
        nested: false,
        sender: Sender::new(host, identity, traceparent, sender),
        traceparent,
        connection,
        attachables,
        feeds: Vec::new(),
    })
}

async fn open_h2(
    engine: &EngineHost,
    host: &str,
) -> Result<(SendRequest<RequestBody>, JoinHandle<()>), ClientError> {
    let io = engine.dial().await?;
    let diagnosis = io.diagnosis();
    let (sender, connection) =
        match hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await {
            Ok(handshake) => handshake,
            Err(source) => {
                return Err(ClientError::Handshake {
                    host: host.to_string(),
                    source,
                    transport: explain(diagnosis).await,
                });
            }
        };
    let connection = tokio::spawn(async move {
        // Its end is seen by the requests that fail.
        let _ = connection.await;
    });
    Ok((sender, connection))
}

/// Headers that belong to one HTTP/1 hop and are not valid in HTTP/2.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
];

impl Client {
    /// A nested client: the engine is at `127.0.0.1:port`, requests carry basic
    /// auth `<token>:` and no metadata (the listener knows who we are). No attachables.
    /// [`Client::metadata`] of a nested client has empty ids and only the client version.
    /// `traceparent`: the span the process runs under (its `TRACEPARENT`), else a new trace.
    pub async fn from_session_env(
        port: u16,
        token: &str,
        traceparent: Option<TraceParent>,
    ) -> Result<Client, ClientError> {
        let engine = EngineHost::Tcp(format!("127.0.0.1:{port}"));
        let host = engine.to_string();
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{token}:"));
        let identity = (
            AUTHORIZATION,
            HeaderValue::try_from(format!("Basic {credentials}")).map_err(|e| {
                ClientError::InvalidRequest {
                    path: "/".into(),
                    reason: format!("authorization header: {e}"),
                }
            })?,
        );
        let (sender, connection) = open_h2(&engine, &host).await?;
        let traceparent = traceparent.unwrap_or_else(TraceParent::new_root);
        Ok(Client {
            metadata: ClientMetadata {
                client_version: env!("CARGO_PKG_VERSION").to_string(),
                ..ClientMetadata::default()
            },
            nested: true,
            sender: Sender::new(host, identity, traceparent, sender),
            traceparent,
            connection,
            attachables: None,
            feeds: Vec::new(),
        })
    }

    /// The span this client's requests hang under.
    pub fn traceparent(&self) -> TraceParent {
        self.traceparent
    }

    /// Who this client is (ids, token, version, labels) as sent in every request.
    pub fn metadata(&self) -> &ClientMetadata {
        &self.metadata
    }

    /// The engine this client talks to, as `unix://...`, `tcp://...` or `stdio://...`.
    pub fn host(&self) -> &str {
        &self.sender.host
    }

    /// Sends a GraphQL request (`{query, variables?, operationName?}`) to `POST /query` and returns
    /// the JSON answer (`{data, errors}`). A non-2xx answer is a [`ClientError::Status`].
    pub async fn query(&self, body: serde_json::Value) -> Result<serde_json::Value, ClientError> {
        const PATH: &str = "/query";
        let bytes = serde_json::to_vec(&body).map_err(|source| ClientError::Json {
            host: self.sender.host.clone(),
            path: PATH.into(),
            source,
        })?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(PATH)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::InvalidRequest {
                path: PATH.into(),
                reason: e.to_string(),
            })?;
        let response = self.request(request).await?;
        let (status, body) = self.read_body(PATH, response).await?;
        if !status.is_success() {
            return Err(ClientError::Status {
                host: self.sender.host.clone(),
                path: PATH.into(),
                status,
                message: error_message(&body),
            });
        }
        serde_json::from_slice(&body).map_err(|source| ClientError::Json {
            host: self.sender.host.clone(),
            path: PATH.into(),
            source,
        })
    }

    /// Sends a raw request on the query connection (for proxies): adds the client's identity
    /// header (and its `traceparent` when the request has none), makes the URI
    /// `http://dagger/<path>` and drops HTTP/1 hop-by-hop headers.
    pub async fn request<B>(&self, request: Request<B>) -> Result<Response<Incoming>, ClientError>
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        self.sender
            .send(request.map(|body| body.map_err(Into::into).boxed_unsync()))
            .await
    }

    async fn read_body(
        &self,
        path: &str,
        response: Response<Incoming>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_QUERY_RESPONSE)
            .collect()
            .await
            .map_err(|source| ClientError::Body {
                host: self.sender.host.clone(),
                path: path.into(),
                source,
            })?
            .to_bytes();
        Ok((status, body))
    }

    /// Ends the session: `POST /shutdown` (main clients), then closes the attachables connection and
    /// waits for its serving task, then waits for the telemetry feeds to end (the engine ends them
    /// once the session has ended and they carry all it produced; at most [`DRAIN_LIMIT`]), then
    /// closes the query connection. The attachables are closed even if the shutdown request
    /// failed; the first error is returned.
    pub async fn close(mut self) -> Result<(), ClientError> {
        const PATH: &str = "/shutdown";
        let shutdown = if self.nested {
            Ok(())
        } else {
            self.shutdown_request(PATH).await
        };
        let attachables = match self.attachables.take() {
            Some(Attachables { stop, task }) => {
                let _ = stop.send(());
                match task.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(source)) => Err(ClientError::Attachables {
                        host: self.sender.host.clone(),
                        source,
                    }),
                    Err(e) => Err(ClientError::Task {
                        host: self.sender.host.clone(),
                        reason: e.to_string(),
                    }),
                }
            }
            None => Ok(()),
        };
        telemetry::drain(std::mem::take(&mut self.feeds)).await;
        // Dropping `self` drops the sender and aborts the connection task.
        shutdown.and(attachables)
    }

    async fn shutdown_request(&self, path: &str) -> Result<(), ClientError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| ClientError::InvalidRequest {
                path: path.into(),
                reason: e.to_string(),
            })?;
        let response = self.request(request).await?;
        let (status, body) = self.read_body(path, response).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(ClientError::Status {
                host: self.sender.host.clone(),
                path: path.into(),
                status,
                message: error_message(&body),
            })
        }
    }
}

impl Sender {
    fn new(
        host: String,
        identity: (HeaderName, HeaderValue),
        traceparent: TraceParent,
        sender: SendRequest<RequestBody>,
    ) -> Sender {
        let traceparent = HeaderValue::try_from(traceparent.to_string())
            .expect("a traceparent is visible ASCII: version, hex ids and flags");
        Sender {
            host,
            identity,
            traceparent,
            sender,
        }
    }

    pub(crate) async fn send(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        parts.uri = Uri::builder()
            .scheme("http")
            .authority("dagger")
            .path_and_query(path.as_str())
            .build()
            .map_err(|e| ClientError::InvalidRequest {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        parts.version = Version::HTTP_2;
        for name in HOP_BY_HOP {
            parts.headers.remove(name);
        }
        parts
            .headers
            .insert(self.identity.0.clone(), self.identity.1.clone());
        if !parts.headers.contains_key(TraceParent::HEADER) {
            parts.headers.insert(
                HeaderName::from_static(TraceParent::HEADER),
                self.traceparent.clone(),
            );
        }
        let request = Request::from_parts(parts, body);
        let failed = |source| ClientError::Request {
            host: self.host.clone(),
            path: path.clone(),
            source,
        };
        let mut sender = self.sender.clone();
        sender.ready().await.map_err(failed)?;
        sender.send_request(request).await.map_err(failed)
    }
}

/// The message of a JSON error body (`error`, `message`, or the first of `errors`), else the text.
fn error_message(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["error", "message"] {
            if let Some(serde_json::Value::String(message)) = map.get(key) {
                return message.clone();
            }
        }
        if let Some(serde_json::Value::String(message)) = map
            .get("errors")
            .and_then(|errors| errors.get(0))
            .and_then(|first| first.get("message"))
        {
            return message.clone();
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if text.is_empty() {
        "(empty body)".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_config_reads_daggers_variables() {
        let env = |name: &str| match name {
            "_EXPERIMENTAL_DAGGER_CACHE_CONFIG" => {
                Some("type=registry,ref=h:5000/c,mode=max;type=registry,ref=h/x\\;y".to_owned())
            }
            "_EXPERIMENTAL_DAGGER_CACHE_IMPORT_CONFIG" => Some("type=registry,ref=h/i".to_owned()),
            _ => None,
        };
        let (imports, exports) = cache_config_from_env(env).expect("parse");
        assert_eq!(imports.len(), 3);
        assert_eq!(exports.len(), 2);
        assert_eq!(imports[0].attrs["ref"], "h/i");
        assert_eq!(exports[0].kind, "registry");
        assert_eq!(exports[0].attrs["mode"], "max");
        assert_eq!(exports[1].attrs["ref"], "h/x;y");
        let bad =
            |name: &str| (name == "_EXPERIMENTAL_DAGGER_CACHE_CONFIG").then(|| "ref=x".to_owned());
        assert!(
            cache_config_from_env(bad)
                .expect_err("no type")
                .contains("no type")
        );
    }
}
