//! HTTP(S) downloads with revalidation, as BuildKit's http source does: a previous download's
//! [`Validators`] go out as `If-None-Match` / `If-Modified-Since`, and a `304 Not Modified`
//! costs one round trip and no transfer. Redirects are followed (at most
//! [`MAX_REDIRECTS`]); only `http` and `https` URLs are accepted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

/// Most redirects followed for one download.
pub const MAX_REDIRECTS: usize = 10;
/// How long a server may take to start answering (the body then streams without a deadline).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// Failures downloading a URL.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("url {url:?} is not supported: want an http:// or https:// url with a host")]
    UnsupportedUrl { url: String },
    #[error("GET {url}: {status}")]
    Status { url: String, status: StatusCode },
    #[error("GET {url}: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects { url: String },
    #[error("GET {url}: redirect without a valid location")]
    BadRedirect { url: String },
    #[error("GET {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("GET {url}: no answer within {}s", RESPONSE_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("GET {url}: reading the body: {source}")]
    Body {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("writing the download of {url} to {path}: {source}")]
    Write {
        url: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What identifies a downloaded version to the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// The outcome of [`HttpFetcher::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The previous download is still current; nothing was written.
    NotModified,
    /// The body was written to the destination file.
    Downloaded {
        /// `sha256:<hex>` of the body.
        digest: String,
        size: u64,
        validators: Validators,
        /// From `Last-Modified` (BuildKit gives the file this modification time).
        modified: Option<SystemTime>,
    },
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A pooled client over `http` (TLS with the public roots for `https`).
fn client_with<R>(
    mut http: HttpConnector<R>,
) -> Client<HttpsConnector<HttpConnector<R>>, Empty<Bytes>>
where
    R: tower::Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R::Future: Send,
{
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(30)));
    http.set_nodelay(true);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_webpki_roots(provider) {
            Ok(with_roots) => with_roots,
            // ring supports the default protocol versions; not expected to happen.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
        };
    let https = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2)
        .build(https)
}

/// Downloads URLs; cheap to clone (one connection pool).
#[derive(Clone)]
pub struct HttpFetcher {
    client: HttpClient,
}

impl Default for HttpFetcher {
    fn default() -> Self {
        HttpFetcher::new()
    }
}

impl HttpFetcher {
    /// A fetcher trusting the public (webpki) roots.
    pub fn new() -> HttpFetcher {
        HttpFetcher {
            client: client_with(HttpConnector::new()),
        }
    }

    /// Downloads `url` into `dest` (created or truncated), unless `previous` still describes the
    /// server's version. Following redirects, each hop must be `http` or `https`.
    pub async fn fetch(
        &self,
        url: &str,
        previous: Option<&Validators>,
        dest: &Path,
    ) -> Result<Fetched, HttpError> {
        Self::fetch_with(&self.client, url, previous, dest).await
    }

    /// [`HttpFetcher::fetch`], with the host names in `hosts` reaching the given addresses
    /// (services of a session, which no DNS server the engine asks knows). A client of its own,
    /// for this download only.
    pub async fn fetch_via(
        &self,
        url: &str,
        previous: Option<&Validators>,
        dest: &Path,
        hosts: &HashMap<String, IpAddr>,
    ) -> Result<Fetched, HttpError> {
        if hosts.is_empty() {
            return self.fetch(url, previous, dest).await;
        }
        let hosts = Arc::new(hosts.clone());
        let resolver = tower::service_fn(move |name: Name| {
            let hosts = hosts.clone();
            async move {
                if let Some(ip) = hosts.get(&name.as_str().to_ascii_lowercase()) {
                    return Ok::<_, std::io::Error>(vec![SocketAddr::new(*ip, 0)].into_iter());
                }
                let found: Vec<SocketAddr> =
                    tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
                Ok(found.into_iter())
            }
        });
        let client = client_with(HttpConnector::new_with_resolver(resolver));
        Self::fetch_with(&client, url, previous, dest).await
    }

    async fn fetch_with<C>(
        client: &Client<C, Empty<Bytes>>,
        url: &str,
        previous: Option<&Validators>,
        dest: &Path,
    ) -> Result<Fetched, HttpError>
    where
        C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    {
        let mut current = check_url(url)?;
        let mut shown = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = Request::get(current.clone())
                .header(USER_AGENT, concat!("dagr/", env!("CARGO_PKG_VERSION")));
            if let Some(previous) = previous {
                if let Some(etag) = &previous.etag {
                    request = request.header(IF_NONE_MATCH, etag);
                }
                if let Some(modified) = &previous.last_modified {
                    request = request.header(IF_MODIFIED_SINCE, modified);
                }
            }
            let request = request
                .body(Empty::new())
                .map_err(|_| HttpError::UnsupportedUrl { url: shown.clone() })?;
            let response =
                match tokio::time::timeout(RESPONSE_TIMEOUT, client.request(request)).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(source)) => return Err(HttpError::Request { url: shown, source }),
                    Err(_) => return Err(HttpError::Timeout { url: shown }),
                };
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| HttpError::BadRedirect { url: shown.clone() })?;
                let next = resolve_location(&current, location)
                    .ok_or_else(|| HttpError::BadRedirect { url: shown.clone() })?;
                shown = next.to_string();
                current = check_url(&shown)?;
                continue;
            }
            if status == StatusCode::NOT_MODIFIED && previous.is_some() {
                return Ok(Fetched::NotModified);
            }
            if !status.is_success() {
                return Err(HttpError::Status { url: shown, status });
            }
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v: &http::HeaderValue| v.to_str().ok())
                    .map(str::to_owned)
            };
            let validators = Validators {
                etag: header(ETAG),
                last_modified: header(LAST_MODIFIED),
            };
            let modified = validators
                .last_modified
                .as_deref()
                .and_then(|v| httpdate::parse_http_date(v).ok());
            let (digest, size) = write_body(response.into_body(), dest, &shown).await?;
            if let Some(modified) = modified {
                let path = dest.to_owned();
                let set = tokio::task::spawn_blocking(move || {
                    filetime::set_file_mtime(&path, filetime::FileTime::from_system_time(modified))
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
                set.map_err(|source| HttpError::Write {
                    url: shown.clone(),
                    path: dest.display().to_string(),
                    source,
                })?;
            }
            return Ok(Fetched::Downloaded {
                digest,
                size,
                validators,
                modified,
            });
        }
        Err(HttpError::TooManyRedirects {
            url: url.to_owned(),
        })
    }
}

/// Streams `body` into `dest`, hashing it; returns `sha256:<hex>` and the size.
async fn write_body(
    mut body: hyper::body::Incoming,
    dest: &Path,
    url: &str,
) -> Result<(String, u64), HttpError> {
    let write_err = |source| HttpError::Write {
        url: url.to_owned(),
        path: dest.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::create(dest).await.map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| HttpError::Body {
            url: url.to_owned(),
            source,
        })?;
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            size += data.len() as u64;
            file.write_all(&data).await.map_err(write_err)?;
        }
    }
    file.flush().await.map_err(write_err)?;
    file.sync_all().await.map_err(write_err)?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// Parses `url`, accepting only `http` and `https` with a host.
fn check_url(url: &str) -> Result<Uri, HttpError> {
    let unsupported = || HttpError::UnsupportedUrl {
        url: url.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| unsupported())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(unsupported()),
    }
}

/// `location` (absolute, or relative to `base`) as a URI.
fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?;
    if location.starts_with("//") {
        return format!("{scheme}:{location}").parse().ok();
    }
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}").parse().ok();
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!("{scheme}://{authority}{dir}{location}")
        .parse()
        .ok()
}

/// The file name BuildKit gives a download: the last segment of the URL's path, or `index`.
pub fn file_name_of(url: &str) -> String {
    let path = url
        .parse::<Uri>()
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    match path.rsplit('/').next() {
        Some(last) if !last.is_empty() && last != "." && last != ".." => last.to_owned(),
        _ => "index".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host() {
        assert!(check_url("https://example.com/a.tar.gz").is_ok());
        assert!(check_url("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "example.com",
            "http://",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_resolve_against_the_current_url() {
        let base: Uri = "http://h:1/a/b/c.txt".parse().expect("uri");
        let r = |l| resolve_location(&base, l).map(|u| u.to_string());
        assert_eq!(r("d.txt").as_deref(), Some("http://h:1/a/b/d.txt"));
        assert_eq!(r("/x").as_deref(), Some("http://h:1/x"));
        assert_eq!(r("//other/y").as_deref(), Some("http://other/y"));
        assert_eq!(r("https://z/").as_deref(), Some("https://z/"));
    }

    #[test]
    fn file_names_follow_the_url_path() {
        assert_eq!(
            file_name_of("https://e.com/dl/tool.tar.gz?x=1"),
            "tool.tar.gz"
        );
        assert_eq!(file_name_of("https://e.com/"), "index");
        assert_eq!(file_name_of("https://e.com"), "index");
    }
}
