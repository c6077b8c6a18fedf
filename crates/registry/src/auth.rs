//! Registry authentication: `WWW-Authenticate` challenges, caller-supplied credentials, and the
//! bearer token cache.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;

/// Why a challenge or a token answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unsupported authentication challenge from {host}: {header:?}")]
    UnsupportedChallenge { host: String, header: String },
    #[error("bearer challenge from {host} has no realm")]
    MissingRealm { host: String },
    #[error("token answer from {realm} is not valid json: {source}")]
    InvalidTokenAnswer {
        realm: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("token answer from {realm} carries no token")]
    EmptyToken { realm: String },
}

/// The user name that marks [`Credentials::secret`] as an identity (OAuth2 refresh) token, as in
/// Docker's credential helpers: tokens are then fetched with the refresh-token grant.
pub const IDENTITY_TOKEN_USERNAME: &str = "<token>";
/// The OAuth2 client id sent with refresh-token grants.
pub const OAUTH_CLIENT_ID: &str = "dagr";

/// A user name and a secret (password or identity token) for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic ...` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A boxed future returned by [`CredentialsProvider::credentials`].
pub type CredentialsFuture<'a> = Pin<Box<dyn Future<Output = Option<Credentials>> + Send + 'a>>;

/// Supplies credentials for a registry host (later backed by the client's auth attachable).
pub trait CredentialsProvider: Send + Sync {
    /// Credentials for `host` (as named in the reference, e.g. `docker.io` or `127.0.0.1:5000`),
    /// or `None` for anonymous access.
    fn credentials<'a>(&'a self, host: &'a str) -> CredentialsFuture<'a>;
}

/// No credentials for any host: anonymous access only.
#[derive(Debug, Default, Clone, Copy)]
pub struct Anonymous;

impl CredentialsProvider for Anonymous {
    fn credentials<'a>(&'a self, _host: &'a str) -> CredentialsFuture<'a> {
        Box::pin(async { None })
    }
}

/// A fixed table of credentials by host.
#[derive(Debug, Default, Clone)]
pub struct StaticCredentials {
    by_host: HashMap<String, Credentials>,
}

impl StaticCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the credentials for `host`.
    pub fn insert(&mut self, host: &str, username: &str, secret: &str) {
        self.by_host.insert(
            host.to_string(),
            Credentials {
                username: username.to_string(),
                secret: secret.to_string(),
            },
        );
    }
}

impl CredentialsProvider for StaticCredentials {
    fn credentials<'a>(&'a self, host: &'a str) -> CredentialsFuture<'a> {
        let found = self.by_host.get(host).cloned();
        Box::pin(async move { found })
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`
    Basic,
    /// `Bearer realm="...",service="...",scope="..."`
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses one `WWW-Authenticate` header value from `host`.
    pub fn parse(host: &str, header: &str) -> Result<Self, AuthError> {
        let header = header.trim();
        let (scheme, params) = match header.split_once(char::is_whitespace) {
            Some((scheme, rest)) => (scheme, rest),
            None => (header, ""),
        };
        let params = parse_params(params);
        if scheme.eq_ignore_ascii_case("basic") {
            return Ok(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::UnsupportedChallenge {
                host: host.to_string(),
                header: header.to_string(),
            });
        }
        let realm = params
            .get("realm")
            .cloned()
            .ok_or_else(|| AuthError::MissingRealm {
                host: host.to_string(),
            })?;
        Ok(Challenge::Bearer {
            realm,
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// `key="quoted, value",key2=token` into a map with lower-case keys.
fn parse_params(input: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            break;
        }
        if chars.peek() != Some(&'=') {
            // a bare token without a value: skip it
            if chars.peek().is_none() {
                break;
            }
            continue;
        }
        chars.next(); // '='
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => break,
                    other => value.push(other),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    out
}

/// The JSON a token server answers with.
#[derive(Debug, serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A token ready to use, with its expiry.
#[derive(Debug, Clone)]
pub(crate) struct BearerToken {
    pub(crate) token: String,
    pub(crate) expires_at: Instant,
}

/// Parses a token server's answer.
pub(crate) fn parse_token_answer(realm: &str, body: &[u8]) -> Result<BearerToken, AuthError> {
    let answer: TokenAnswer =
        serde_json::from_slice(body).map_err(|source| AuthError::InvalidTokenAnswer {
            realm: realm.to_string(),
            source,
        })?;
    let token = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| AuthError::EmptyToken {
            realm: realm.to_string(),
        })?;
    // The distribution spec says 60 seconds when unset; renew a little early.
    let lifetime = answer.expires_in.unwrap_or(60).max(10);
    Ok(BearerToken {
        token,
        expires_at: Instant::now() + Duration::from_secs(lifetime.saturating_sub(5)),
    })
}

/// What to put in `Authorization` for requests to one endpoint with one scope.
#[derive(Debug, Default, Clone)]
pub(crate) struct AuthCache {
    entries: Arc<Mutex<HashMap<(String, String), CachedAuth>>>,
}

#[derive(Debug, Clone)]
enum CachedAuth {
    Basic(String),
    Bearer(BearerToken),
}

impl AuthCache {
    pub(crate) fn get(&self, endpoint: &str, scope: &str) -> Option<String> {
        let mut entries = self.entries.lock();
        let key = (endpoint.to_string(), scope.to_string());
        match entries.get(&key) {
            Some(CachedAuth::Basic(header)) => Some(header.clone()),
            Some(CachedAuth::Bearer(token)) if token.expires_at > Instant::now() => {
                Some(format!("Bearer {}", token.token))
            }
            Some(CachedAuth::Bearer(_)) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put_basic(&self, endpoint: &str, scope: &str, header: String) {
        self.entries.lock().insert(
            (endpoint.to_string(), scope.to_string()),
            CachedAuth::Basic(header),
        );
    }

    pub(crate) fn put_bearer(&self, endpoint: &str, scope: &str, token: BearerToken) -> String {
        let header = format!("Bearer {}", token.token);
        self.entries.lock().insert(
            (endpoint.to_string(), scope.to_string()),
            CachedAuth::Bearer(token),
        );
        header
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let c = Challenge::parse(
            "registry-1.docker.io",
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }
        );
    }

    #[test]
    fn parses_commas_inside_quotes_and_unquoted_values() {
        let c = Challenge::parse(
            "h",
            r#"bearer realm=http://127.0.0.1:1/token, scope="repository:a:pull,push", service=svc"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "http://127.0.0.1:1/token".into(),
                service: Some("svc".into()),
                scope: Some("repository:a:pull,push".into()),
            }
        );
        assert_eq!(
            Challenge::parse("h", r#"Basic realm="Registry Realm""#).unwrap(),
            Challenge::Basic
        );
    }

    #[test]
    fn refuses_unknown_schemes_and_missing_realm() {
        assert!(matches!(
            Challenge::parse("h", "Negotiate abc"),
            Err(AuthError::UnsupportedChallenge { .. })
        ));
        assert!(matches!(
            Challenge::parse("h", r#"Bearer service="x""#),
            Err(AuthError::MissingRealm { .. })
        ));
    }

    #[test]
    fn token_answers() {
        let t = parse_token_answer("r", br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.token, "abc");
        let t = parse_token_answer("r", br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.token, "xyz");
        assert!(matches!(
            parse_token_answer("r", br#"{"token":""}"#),
            Err(AuthError::EmptyToken { .. })
        ));
        assert!(matches!(
            parse_token_answer("r", b"not json"),
            Err(AuthError::InvalidTokenAnswer { .. })
        ));
    }

    #[test]
    fn basic_header_encodes_user_and_secret() {
        let c = Credentials {
            username: "user".into(),
            secret: "pass".into(),
        };
        assert_eq!(c.basic_header(), "Basic dXNlcjpwYXNz");
        assert!(!format!("{c:?}").contains("pass"));
    }

    #[test]
    fn cache_keys_by_endpoint_and_scope() {
        let cache = AuthCache::default();
        let token = parse_token_answer("r", br#"{"token":"t1","expires_in":300}"#).unwrap();
        cache.put_bearer("h", "repository:a:pull", token);
        assert_eq!(
            cache.get("h", "repository:a:pull").as_deref(),
            Some("Bearer t1")
        );
        assert_eq!(cache.get("h", "repository:a:pull,push"), None);
        assert_eq!(cache.get("other", "repository:a:pull"), None);
    }
}
