//! The wire identity of a client: [`ClientMetadata`], carried base64-encoded in the
//! [`CLIENT_METADATA_HEADER`] header of every request; [`ClientRef`], the (session, client) pair
//! by which every other crate names a client once the request is admitted; plus the header names of the
//! attachables handshake ([`EXPOSE_METHOD_HEADER`]). Clients that authenticate with the session
//! token as basic auth instead (nested clients, the CLI's session proxy) are checked by
//! [`basic_auth_matches`].
//!
//! This crate only encodes, decodes and checks the *shape* of the metadata (non-empty ids and token).
//! Version policy and the comparison of the metadata's token belong to the server (`dagr-session`).

mod basic_auth;

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

pub use basic_auth::basic_auth_matches;

/// Name of the header that scopes every request to a client.
pub const CLIENT_METADATA_HEADER: &str = "x-dagger-client-metadata";
/// One such header per gRPC method a client serves on its attachables connection.
pub const EXPOSE_METHOD_HEADER: &str = "x-docker-expose-session-grpc-method";
/// Path of the attachables handshake.
pub const ATTACHABLES_PATH: &str = "/sessionAttachables";
/// `Upgrade` token our client sends on the attachables request (hyper needs one to upgrade).
pub const ATTACHABLES_UPGRADE_TOKEN: &str = "dagger-session-attachables";

/// Who a request comes from. Unknown JSON keys are ignored; missing ones default to empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientMetadata {
    pub client_id: String,
    pub client_secret_token: String,
    pub session_id: String,
    pub client_hostname: String,
    pub client_version: String,
    pub labels: BTreeMap<String, String>,
    /// Remote caches the session reads (Dagger's `_EXPERIMENTAL_DAGGER_CACHE_CONFIG`); only
    /// the main client's count.
    #[serde(
        rename = "UpstreamCacheImportConfig",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cache_imports: Vec<CacheOptionsEntry>,
    /// Remote caches the session's results are written to when it ends.
    #[serde(
        rename = "UpstreamCacheExportConfig",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cache_exports: Vec<CacheOptionsEntry>,
}

/// One remote cache as a client names it (BuildKit's `CacheOptionsEntry`: a type such as
/// `registry` and its attributes such as `ref` and `mode`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheOptionsEntry {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Attrs", default)]
    pub attrs: BTreeMap<String, String>,
}

/// Names one client of one session: whose host a host read comes from, whose request a resolver
/// serves, whose attachables a host write goes to. The one name every crate uses for this pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientRef {
    pub session_id: String,
    pub client_id: String,
}

impl ClientRef {
    pub fn new(session_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        ClientRef {
            session_id: session_id.into(),
            client_id: client_id.into(),
        }
    }
}

impl std::fmt::Display for ClientRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "client {} of session {}",
            self.client_id, self.session_id
        )
    }
}

/// Why a metadata header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("missing {CLIENT_METADATA_HEADER} header")]
    Missing,
    #[error("{CLIENT_METADATA_HEADER} header is not valid base64: {0}")]
    Base64(String),
    #[error("{CLIENT_METADATA_HEADER} header is not a valid JSON object: {0}")]
    Json(String),
    #[error("{CLIENT_METADATA_HEADER} header has an empty {0}")]
    Empty(&'static str),
}

impl ClientMetadata {
    /// Encodes as the header value: standard padded base64 of the JSON object.
    pub fn encode(&self) -> String {
        // Serializing a struct of strings and a string map cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        STANDARD.encode(json)
    }

    /// Decodes a header value and checks that ids and token are non-empty.
    pub fn decode(value: &[u8]) -> Result<Self, MetadataError> {
        let trimmed = value.trim_ascii();
        if trimmed.is_empty() {
            return Err(MetadataError::Missing);
        }
        let json = STANDARD
            .decode(trimmed)
            .map_err(|e| MetadataError::Base64(e.to_string()))?;
        let md: ClientMetadata =
            serde_json::from_slice(&json).map_err(|e| MetadataError::Json(e.to_string()))?;
        md.check_shape()?;
        Ok(md)
    }

    /// The (session, client) pair this metadata names.
    pub fn client_ref(&self) -> ClientRef {
        ClientRef::new(&self.session_id, &self.client_id)
    }

    /// The checks every request gets: ids and token must be non-empty.
    pub fn check_shape(&self) -> Result<(), MetadataError> {
        if self.client_id.is_empty() {
            return Err(MetadataError::Empty("client_id"));
        }
        if self.session_id.is_empty() {
            return Err(MetadataError::Empty("session_id"));
        }
        if self.client_secret_token.is_empty() {
            return Err(MetadataError::Empty("client_secret_token"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClientMetadata {
        ClientMetadata {
            client_id: "c1".into(),
            client_secret_token: "tok".into(),
            session_id: "s1".into(),
            client_hostname: "host".into(),
            client_version: "v0.11.8".into(),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip() {
        let md = sample();
        assert_eq!(ClientMetadata::decode(md.encode().as_bytes()), Ok(md));
    }

    #[test]
    fn unknown_keys_ignored_and_missing_default() {
        let json = r#"{"client_id":"a","session_id":"b","client_secret_token":"t","extra":1}"#;
        let md = ClientMetadata::decode(STANDARD.encode(json).as_bytes()).expect("decodes");
        assert_eq!(md.client_id, "a");
        assert!(md.labels.is_empty());
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(ClientMetadata::decode(b""), Err(MetadataError::Missing));
        assert!(matches!(
            ClientMetadata::decode(b"!!!"),
            Err(MetadataError::Base64(_))
        ));
        assert!(matches!(
            ClientMetadata::decode(STANDARD.encode("[1]").as_bytes()),
            Err(MetadataError::Json(_))
        ));
        let mut md = sample();
        md.client_id.clear();
        assert_eq!(
            ClientMetadata::decode(md.encode().as_bytes()),
            Err(MetadataError::Empty("client_id"))
        );
        let mut md = sample();
        md.session_id.clear();
        let err = ClientMetadata::decode(md.encode().as_bytes()).expect_err("refused");
        assert!(err.to_string().contains("session_id"));
        let mut md = sample();
        md.client_secret_token.clear();
        assert_eq!(
            ClientMetadata::decode(md.encode().as_bytes()),
            Err(MetadataError::Empty("client_secret_token"))
        );
    }
}
