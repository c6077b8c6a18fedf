//! HTTP to registry endpoints: scheme choice (https unless loopback or configured insecure),
//! mirrors, authentication retries (bearer token or basic) and redirects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::auth::{self, AuthCache, AuthError, Challenge, CredentialsProvider};

/// Request bodies sent to registries.
pub type RequestBody = BoxBody<Bytes, std::io::Error>;

const MAX_REDIRECTS: usize = 5;

/// Attempts of a manifest or blob transfer (per endpoint for pulls) when failures look
/// transient.
pub(crate) const ATTEMPTS: u32 = 3;
/// Delay before the second attempt; the n-th retry waits n times this.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// The longest `Retry-After` honoured; a registry asking for more is tried again after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long to wait before attempt `attempt + 1`: what the registry asked (`Retry-After`, at
/// most [`MAX_RETRY_AFTER`]), else `attempt` times [`RETRY_DELAY`].
pub(crate) fn retry_delay(attempt: u32, asked: Option<Duration>) -> Duration {
    asked.map_or(RETRY_DELAY * attempt, |asked| asked.min(MAX_RETRY_AFTER))
}
/// How long a registry may take to start answering a request (hang protection; bodies stream
/// without a deadline).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_ERROR_BODY: usize = 4096;
const MAX_TOKEN_BODY: usize = 1 << 20;

/// Failures talking to a registry endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid registry url {url:?}")]
    InvalidUrl { url: String },
    #[error("invalid mirror endpoint {endpoint:?} for {host}")]
    InvalidMirror { host: String, endpoint: String },
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the answer of {url} failed: {message}")]
    Body { url: String, message: String },
    #[error("answer of {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("authentication with {host} failed: {source}")]
    Auth {
        host: String,
        #[source]
        source: AuthError,
    },
    #[error("{url}: unauthorized (credentials for {host} missing or refused)")]
    Unauthorized { url: String, host: String },
    #[error("token request to {realm} answered {status}: {body}")]
    TokenStatus {
        realm: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
        /// How many seconds the registry asked to wait (`Retry-After`), if it did (small, so
        /// that errors carrying this one stay small).
        retry_after: Option<u16>,
    },
    #[error("ca certificates configured for {host} are unusable: {message}")]
    InvalidCaCertificates { host: String, message: String },
    #[error("{url} sent no answer within {seconds} seconds")]
    Timeout { url: String, seconds: u64 },
    #[error("too many redirects from {url}")]
    TooManyRedirects { url: String },
}

impl TransportError {
    /// Whether trying again may succeed: connection failures, timeouts, broken bodies, 429 and
    /// 5xx answers.
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::Request { .. }
            | TransportError::Body { .. }
            | TransportError::Timeout { .. } => true,
            TransportError::Status { status, .. } | TransportError::TokenStatus { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }

    /// How long the registry asked to wait before trying again.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            TransportError::Status { retry_after, .. } => {
                retry_after.map(|s| std::time::Duration::from_secs(u64::from(s)))
            }
            _ => None,
        }
    }
}

/// A `Retry-After` header in seconds (an HTTP date is ignored: the caller's own backoff
/// applies); more than `u16::MAX` seconds is read as that.
fn retry_after(response: &Response<Incoming>) -> Option<u16> {
    let seconds: u64 = response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(u16::try_from(seconds).unwrap_or(u16::MAX))
}

/// Registry hosts configuration: mirrors and hosts reached over plain http.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registry host (as in references: `docker.io`, `ghcr.io`) to mirror endpoints tried first for
    /// pulls, in order. An endpoint is `host[:port]` or a `http://`/`https://` url (a path prefix is
    /// not supported).
    pub mirrors: HashMap<String, Vec<String>>,
    /// Registry hosts reached over `http://`. Loopback hosts always are.
    pub insecure: HashSet<String>,
    /// PEM CA certificates per `host[:port]` (a registry or mirror endpoint): https connections
    /// to that host trust these instead of the public roots. Unusable PEM data is reported by
    /// the first request to that host.
    pub ca_certificates: HashMap<String, Vec<u8>>,
}

/// One place that serves the registry API for a registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]` to connect to.
    pub authority: String,
    /// The registry host this endpoint serves.
    pub registry: String,
    /// Whether this is a mirror rather than the registry itself.
    pub mirror: bool,
}

impl Endpoint {
    /// The host to ask credentials for: the registry host for the registry itself (`docker.io`,
    /// not `registry-1.docker.io`), the mirror's own `host[:port]` for a mirror.
    pub fn credentials_host(&self) -> &str {
        if self.mirror {
            &self.authority
        } else {
            &self.registry
        }
    }

    /// `scheme://authority` + `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}://{}{}", self.scheme, self.authority, path_and_query)
    }
}

/// Whether `host` (with an optional port) is a loopback name or address.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(inner) = host.strip_prefix('[') {
        inner.split(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    if name == "localhost" {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

impl RegistryConfig {
    fn scheme_for(&self, host: &str) -> &'static str {
        if is_loopback_host(host) || self.insecure.contains(host) {
            "http"
        } else {
            "https"
        }
    }

    /// The registry's own endpoint for `registry` (served at `api_host`).
    pub fn endpoint(&self, registry: &str, api_host: &str) -> Endpoint {
        Endpoint {
            scheme: self.scheme_for(registry),
            authority: api_host.to_string(),
            registry: registry.to_string(),
            mirror: false,
        }
    }

    /// The endpoints to pull from: mirrors first, then the registry itself.
    pub fn pull_endpoints(
        &self,
        registry: &str,
        api_host: &str,
    ) -> Result<Vec<Endpoint>, TransportError> {
        let mut out = Vec::new();
        for mirror in self.mirrors.get(registry).into_iter().flatten() {
            let invalid = || TransportError::InvalidMirror {
                host: registry.to_string(),
                endpoint: mirror.clone(),
            };
            let (scheme, authority) = if let Some(rest) = mirror.strip_prefix("http://") {
                ("http", rest)
            } else if let Some(rest) = mirror.strip_prefix("https://") {
                ("https", rest)
            } else {
                (self.scheme_for(mirror), mirror.as_str())
            };
            let authority = authority.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(invalid());
            }
            if authority.parse::<http::uri::Authority>().is_err() {
                return Err(invalid());
            }
            out.push(Endpoint {
                scheme,
                authority: authority.to_string(),
                registry: registry.to_string(),
                mirror: true,
            });
        }
        out.push(self.endpoint(registry, api_host));
        Ok(out)
    }
}

/// The access a request needs, as token scopes (`repository:library/busybox:pull`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(Vec<String>);

impl Scope {
    pub fn pull(repository: &str) -> Self {
        Self(vec![format!("repository:{repository}:pull")])
    }

    pub fn push(repository: &str) -> Self {
        Self(vec![format!("repository:{repository}:pull,push")])
    }

    /// Adds pull access to another repository (cross-repository mounts).
    pub fn and_pull(mut self, repository: &str) -> Self {
        self.0.push(format!("repository:{repository}:pull"));
        self
    }

    fn key(&self) -> String {
        self.0.join(" ")
    }
}

/// The HTTP client shared by all requests of a [`crate::RegistryClient`].
#[derive(Clone)]
pub(crate) struct Transport {
    /// Trusts the public (webpki) roots.
    http: HttpClient,
    /// Per `host[:port]` with configured CA certificates: a client trusting those, or why the
    /// certificates could not be used.
    private_ca: Arc<HashMap<String, Result<HttpClient, String>>>,
    auth: AuthCache,
    credentials: Arc<dyn CredentialsProvider>,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn http_client(tls: Option<rustls::ClientConfig>) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(30)));
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match tls {
        Some(config) => builder.with_tls_config(config),
        None => match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(crypto_provider())
        {
            Ok(with_roots) => with_roots,
            // ring supports the default protocol versions; this is not expected to happen.
            Err(_) => builder.with_webpki_roots(),
        },
    };
    let https = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .build(https)
}

/// Idle keep-alive connections kept per registry host: a burst of concurrent pulls opens as
/// many connections as it needs, but only this many stay open afterwards (a thousand sessions
/// must not mean a thousand sockets to one registry).
pub const POOL_MAX_IDLE_PER_HOST: usize = 4;

/// How long an idle connection is kept for the next request.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A TLS client config trusting only the CA certificates in `pem`.
fn private_ca_config(pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("invalid pem: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("invalid ca certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in the pem data".to_string());
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// An empty request body.
pub(crate) fn empty_body() -> RequestBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A request body holding `bytes`.
pub(crate) fn bytes_body(bytes: Bytes) -> RequestBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Percent-encodes a query parameter value.
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Resolves a `Location` header against the url it was answered to.
pub(crate) fn resolve_location(base: &str, location: &str) -> Result<String, TransportError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_string());
    }
    let uri: Uri = base.parse().map_err(|_| TransportError::InvalidUrl {
        url: base.to_string(),
    })?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(TransportError::InvalidUrl {
            url: base.to_string(),
        });
    };
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    let path = uri.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Ok(format!("{scheme}://{authority}{dir}{location}"))
}

fn authority_of(url: &str) -> Option<String> {
    url.parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
}

impl Transport {
    /// The same connection pool with other credentials and an empty token cache (tokens are
    /// never shared between credential providers).
    pub(crate) fn with_credentials(&self, credentials: Arc<dyn CredentialsProvider>) -> Self {
        Self {
            http: self.http.clone(),
            private_ca: self.private_ca.clone(),
            auth: AuthCache::default(),
            credentials,
        }
    }

    pub(crate) fn new(config: &RegistryConfig, credentials: Arc<dyn CredentialsProvider>) -> Self {
        let private_ca = config
            .ca_certificates
            .iter()
            .map(|(host, pem)| {
                let client = private_ca_config(pem).map(|tls| http_client(Some(tls)));
                (host.clone(), client)
            })
            .collect();
        Self {
            http: http_client(None),
            private_ca: Arc::new(private_ca),
            auth: AuthCache::default(),
            credentials,
        }
    }

    /// The client for `url`: one trusting the host's own CA certificates if configured.
    fn client_for(&self, url: &str) -> Result<&HttpClient, TransportError> {
        let Some(authority) = authority_of(url) else {
            return Err(TransportError::InvalidUrl {
                url: url.to_string(),
            });
        };
        match self.private_ca.get(&authority) {
            None => Ok(&self.http),
            Some(Ok(client)) => Ok(client),
            Some(Err(message)) => Err(TransportError::InvalidCaCertificates {
                host: authority,
                message: message.clone(),
            }),
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        authorization: Option<&str>,
        body: RequestBody,
    ) -> Result<Response<Incoming>, TransportError> {
        let mut builder = Request::builder().method(method.clone()).uri(url);
        if let Some(h) = builder.headers_mut() {
            h.extend(headers.clone());
            if let Some(value) = authorization.and_then(|a| HeaderValue::from_str(a).ok()) {
                h.insert(AUTHORIZATION, value);
            }
        }
        let request = builder.body(body).map_err(|_| TransportError::InvalidUrl {
            url: url.to_string(),
        })?;
        let client = self.client_for(url)?;
        match tokio::time::timeout(RESPONSE_TIMEOUT, client.request(request)).await {
            Ok(result) => result.map_err(|source| TransportError::Request {
                url: url.to_string(),
                source,
            }),
            Err(_) => Err(TransportError::Timeout {
                url: url.to_string(),
                seconds: RESPONSE_TIMEOUT.as_secs(),
            }),
        }
    }

    /// Sends a request to `url` on `endpoint` with the authorization `scope` needs: a cached
    /// token is used when there is one; a 401 answer's challenge is answered (token fetched with the
    /// caller's credentials if any, or basic credentials) and the request is retried once.
    /// Redirects of GET and HEAD are followed, without credentials when they leave the endpoint.
    /// `make_body` is called once per attempt.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        scope: &Scope,
        method: Method,
        url: &str,
        headers: HeaderMap,
        make_body: &(dyn Fn() -> RequestBody + Send + Sync),
    ) -> Result<Response<Incoming>, TransportError> {
        let scope_key = scope.key();
        let mut url = url.to_string();
        let mut retried_auth = false;
        let mut redirects = 0;
        loop {
            let same_host = authority_of(&url).as_deref() == Some(endpoint.authority.as_str());
            let authorization = if same_host {
                self.auth.get(&endpoint.authority, &scope_key)
            } else {
                None
            };
            let response = self
                .send_once(
                    &method,
                    &url,
                    &headers,
                    authorization.as_deref(),
                    make_body(),
                )
                .await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && same_host && !retried_auth {
                retried_auth = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let Some(challenge) = challenge else {
                    return Err(TransportError::Unauthorized {
                        url,
                        host: endpoint.credentials_host().to_string(),
                    });
                };
                self.authenticate(endpoint, scope, &challenge).await?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                return Err(TransportError::Unauthorized {
                    url,
                    host: endpoint.credentials_host().to_string(),
                });
            }
            let redirect = matches!(
                status,
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            );
            if redirect && (method == Method::GET || method == Method::HEAD) {
                let Some(location) = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                else {
                    return Ok(response);
                };
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(TransportError::TooManyRedirects { url });
                }
                url = resolve_location(&url, location)?;
                continue;
            }
            return Ok(response);
        }
    }

    async fn authenticate(
        &self,
        endpoint: &Endpoint,
        scope: &Scope,
        header: &str,
    ) -> Result<(), TransportError> {
        let auth_err = |source| TransportError::Auth {
            host: endpoint.credentials_host().to_string(),
            source,
        };
        let challenge = Challenge::parse(&endpoint.authority, header).map_err(auth_err)?;
        let credentials = self
            .credentials
            .credentials(endpoint.credentials_host())
            .await;
        match challenge {
            Challenge::Basic => {
                let Some(credentials) = credentials else {
                    return Err(TransportError::Unauthorized {
                        url: endpoint.url("/v2/"),
                        host: endpoint.credentials_host().to_string(),
                    });
                };
                self.auth.put_basic(
                    &endpoint.authority,
                    &scope.key(),
                    credentials.basic_header(),
                );
                Ok(())
            }
            Challenge::Bearer {
                realm,
                service,
                scope: challenge_scope,
            } => {
                let mut query = Vec::new();
                if let Some(service) = &service {
                    query.push(format!("service={}", encode_query(service)));
                }
                let mut scopes = scope.0.clone();
                if let Some(extra) = challenge_scope
                    && !scopes.contains(&extra)
                {
                    scopes.push(extra);
                }
                for s in &scopes {
                    query.push(format!("scope={}", encode_query(s)));
                }
                let separator = if realm.contains('?') { '&' } else { '?' };
                let token_url = if query.is_empty() {
                    realm.clone()
                } else {
                    format!("{realm}{separator}{}", query.join("&"))
                };
                let response = match credentials.as_ref() {
                    // An identity (refresh) token: the OAuth2 refresh-token grant, as Docker does.
                    Some(c) if c.username == auth::IDENTITY_TOKEN_USERNAME => {
                        let mut form = vec![
                            "grant_type=refresh_token".to_string(),
                            format!("refresh_token={}", encode_query(&c.secret)),
                            format!("client_id={}", encode_query(auth::OAUTH_CLIENT_ID)),
                        ];
                        if let Some(service) = &service {
                            form.push(format!("service={}", encode_query(service)));
                        }
                        if !scopes.is_empty() {
                            form.push(format!("scope={}", encode_query(&scopes.join(" "))));
                        }
                        let mut headers = HeaderMap::new();
                        headers.insert(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("application/x-www-form-urlencoded"),
                        );
                        self.send_once(
                            &Method::POST,
                            &realm,
                            &headers,
                            None,
                            bytes_body(Bytes::from(form.join("&"))),
                        )
                        .await?
                    }
                    _ => {
                        let basic = credentials.as_ref().map(|c| c.basic_header());
                        self.send_once(
                            &Method::GET,
                            &token_url,
                            &HeaderMap::new(),
                            basic.as_deref(),
                            empty_body(),
                        )
                        .await?
                    }
                };
                let status = response.status();
                if !status.is_success() {
                    let body = error_text(response).await;
                    return Err(TransportError::TokenStatus {
                        realm,
                        status,
                        body,
                    });
                }
                let body = read_limited(response, &token_url, MAX_TOKEN_BODY).await?;
                let token = auth::parse_token_answer(&realm, &body).map_err(auth_err)?;
                self.auth
                    .put_bearer(&endpoint.authority, &scope.key(), token);
                Ok(())
            }
        }
    }
}

/// Reads a whole answer, refusing more than `limit` bytes.
pub(crate) async fn read_limited(
    response: Response<Incoming>,
    url: &str,
    limit: usize,
) -> Result<Bytes, TransportError> {
    let body = Limited::new(response.into_body(), limit);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(TransportError::TooLarge {
            url: url.to_string(),
            limit,
        }),
        Err(e) => Err(TransportError::Body {
            url: url.to_string(),
            message: e.to_string(),
        }),
    }
}

/// The start of an error answer's body, as text for error messages.
pub(crate) async fn error_text(response: Response<Incoming>) -> String {
    let body = Limited::new(response.into_body(), MAX_ERROR_BODY * 4);
    match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)]);
            text.trim().to_string()
        }
        Err(_) => String::new(),
    }
}

/// Turns a non-success answer into [`TransportError::Status`].
pub(crate) async fn status_error(
    method: Method,
    url: &str,
    response: Response<Incoming>,
) -> TransportError {
    let status = response.status();
    let retry_after = retry_after(&response);
    let body = error_text(response).await;
    TransportError::Status {
        method,
        url: url.to_string(),
        status,
        body,
        retry_after,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("127.1.2.3"));
        assert!(is_loopback_host("localhost:80"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("docker.io"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
    }

    #[test]
    fn schemes_and_mirrors() {
        let mut config = RegistryConfig::default();
        config.insecure.insert("reg.lan:5000".into());
        config.mirrors.insert(
            "docker.io".into(),
            vec!["mirror.example.com".into(), "http://10.0.0.2:5000/".into()],
        );
        let eps = config
            .pull_endpoints("docker.io", "registry-1.docker.io")
            .unwrap();
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].url("/v2/"), "https://mirror.example.com/v2/");
        assert_eq!(eps[1].url("/v2/"), "http://10.0.0.2:5000/v2/");
        assert!(eps[1].mirror);
        assert_eq!(eps[2].url("/v2/"), "https://registry-1.docker.io/v2/");
        assert!(!eps[2].mirror);
        assert_eq!(eps[0].credentials_host(), "mirror.example.com");
        assert_eq!(eps[2].credentials_host(), "docker.io");
        assert_eq!(
            config.endpoint("reg.lan:5000", "reg.lan:5000").scheme,
            "http"
        );
        assert_eq!(
            config.endpoint("127.0.0.1:5000", "127.0.0.1:5000").scheme,
            "http"
        );
        config
            .mirrors
            .insert("x.io".into(), vec!["https://m.io/prefix".into()]);
        assert!(matches!(
            config.pull_endpoints("x.io", "x.io"),
            Err(TransportError::InvalidMirror { .. })
        ));
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base = "http://127.0.0.1:5000/v2/a/blobs/uploads/";
        assert_eq!(
            resolve_location(base, "/v2/a/blobs/uploads/123?_state=x").unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/123?_state=x"
        );
        assert_eq!(
            resolve_location(base, "https://cdn.example/x").unwrap(),
            "https://cdn.example/x"
        );
        assert_eq!(
            resolve_location(base, "456").unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/456"
        );
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            encode_query("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
