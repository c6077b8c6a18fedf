//! Pulling: tag or digest -> manifest (through an index when needed) -> config and layers into the
//! content store, every blob digest- and size-verified.

use bytes::Bytes;
use dagr_snapshot::{ContentError, ContentStore, Digest};
use futures::{StreamExt as _, TryStreamExt as _};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt as _;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use tokio::io::AsyncWriteExt as _;

use crate::client::RegistryClient;
use crate::image::{
    self, ImageError, MANIFEST_ACCEPT, MAX_MANIFEST_SIZE, ManifestKind, Platform, PulledImage,
};
use crate::reference::Reference;
use crate::transport::{self, Endpoint, Scope, TransportError, empty_body};

/// How deep indexes may nest (an index naming an index naming a manifest is depth 2).
const MAX_INDEX_DEPTH: usize = 4;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("pull {reference}: {source}")]
    Transport {
        reference: String,
        #[source]
        source: TransportError,
    },
    #[error("pull {reference}: every endpoint failed: {}", .failures.iter().map(|(endpoint, e)| format!("{endpoint}: {e}")).collect::<Vec<_>>().join("; "))]
    AllEndpointsFailed {
        reference: String,
        /// Each endpoint (`host[:port]`, mirrors first) with its error.
        failures: Vec<(String, PullError)>,
    },
    #[error("pull {reference}: manifest not found")]
    ManifestNotFound { reference: String },
    #[error("pull {reference}: manifest digest mismatch: expected {expected}, got {actual}")]
    ManifestDigestMismatch {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("pull {reference}: {source}")]
    Image {
        reference: String,
        #[source]
        source: ImageError,
    },
    #[error("pull {reference}: blob {digest} has {actual} bytes, expected {expected}")]
    BlobSize {
        reference: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("pull {reference}: blob {digest}: {source}")]
    Content {
        reference: String,
        digest: Digest,
        #[source]
        source: ContentError,
    },
    #[error("pull {reference}: writing blob {digest} failed: {source}")]
    Write {
        reference: String,
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `fetch` against each endpoint in turn (mirrors first), retrying transient failures up
/// to `ATTEMPTS` times per endpoint; the first success wins, else every endpoint's failure is
/// reported.
async fn with_fallback<'a, T, F, Fut>(
    endpoints: &'a [Endpoint],
    reference: &Reference,
    what: &str,
    mut fetch: F,
) -> Result<T, PullError>
where
    F: FnMut(&'a Endpoint) -> Fut,
    Fut: std::future::Future<Output = Result<T, PullError>>,
{
    let mut failures = Vec::new();
    for endpoint in endpoints {
        let mut attempt = 1;
        loop {
            match fetch(endpoint).await {
                Ok(fetched) => return Ok(fetched),
                Err(e) if e.is_transient() && attempt < transport::ATTEMPTS => {
                    let delay = transport::retry_delay(attempt, e.retry_after());
                    tracing::debug!(endpoint = %endpoint.authority, attempt, ?delay, error = %e, "retrying {what} fetch");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint.authority, error = %e, "{what} fetch failed");
                    failures.push((endpoint.authority.clone(), e));
                    break;
                }
            }
        }
    }
    Err(combine_failures(reference, failures))
}

/// One endpoint's error as is; several as [`PullError::AllEndpointsFailed`].
fn combine_failures(reference: &Reference, mut failures: Vec<(String, PullError)>) -> PullError {
    match failures.len() {
        0 => PullError::ManifestNotFound {
            reference: reference.to_string(),
        },
        1 => failures.remove(0).1,
        _ => PullError::AllEndpointsFailed {
            reference: reference.to_string(),
            failures,
        },
    }
}

impl PullError {
    /// Whether trying again may succeed: connection failures, timeouts, broken bodies, 429 and
    /// 5xx answers.
    pub fn is_transient(&self) -> bool {
        match self {
            PullError::Transport { source, .. } => source.is_transient(),
            // Truncated or damaged in transit: a new download may be whole (nothing unverified
            // was stored).
            PullError::BlobSize { .. }
            | PullError::Content {
                source: ContentError::DigestMismatch { .. },
                ..
            } => true,
            _ => false,
        }
    }

    /// How long the registry asked to wait before trying again.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            PullError::Transport { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

/// A blob as it downloads ([`RegistryClient::blob_stream`]).
pub struct BlobStream {
    reference: String,
    url: String,
    digest: Digest,
    size: u64,
    read: u64,
    body: hyper::body::Incoming,
}

impl BlobStream {
    /// The next bytes; `None` at the end. More than the announced size is an error.
    pub async fn next_chunk(&mut self) -> Option<Result<bytes::Bytes, PullError>> {
        loop {
            let frame = match self.body.frame().await? {
                Ok(frame) => frame,
                Err(e) => {
                    return Some(Err(PullError::Transport {
                        reference: self.reference.clone(),
                        source: TransportError::Body {
                            url: self.url.clone(),
                            message: e.to_string(),
                        },
                    }));
                }
            };
            if let Ok(data) = frame.into_data() {
                self.read += data.len() as u64;
                if self.read > self.size {
                    return Some(Err(PullError::BlobSize {
                        reference: self.reference.clone(),
                        digest: self.digest.clone(),
                        expected: self.size,
                        actual: self.read,
                    }));
                }
                return Some(Ok(data));
            }
        }
    }
}

/// An image manifest and its config, resolved from a reference and stored (without layers).
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The index (or manifest list) the manifest was chosen from, if any.
    pub index_digest: Option<Digest>,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
}

/// A manifest or index as the registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub kind: ManifestKind,
    pub media_type: String,
    pub bytes: Bytes,
}

impl RegistryClient {
    /// Fetches the manifest or index that `reference` names (mirrors first), verifying it
    /// against the reference's digest when it has one.
    pub async fn fetch_manifest(
        &self,
        reference: &Reference,
    ) -> Result<FetchedManifest, PullError> {
        let endpoints = self.pull_endpoints(reference)?;
        self.fetch_manifest_from(
            &endpoints,
            reference,
            &reference.manifest_key(),
            reference.digest(),
        )
        .await
    }

    /// Resolves `reference` to one image manifest (choosing `platform` from an index) and fetches
    /// its config, storing the index, the manifest and the config in `store` (no layers). This is
    /// what a build needs to know before deciding whether to fetch layers.
    pub async fn resolve(
        &self,
        reference: &Reference,
        platform: &Platform,
        store: &ContentStore,
    ) -> Result<ResolvedImage, PullError> {
        let endpoints = self.pull_endpoints(reference)?;
        self.resolve_at(&endpoints, reference, platform, store)
            .await
    }

    async fn resolve_at(
        &self,
        endpoints: &[Endpoint],
        reference: &Reference,
        platform: &Platform,
        store: &ContentStore,
    ) -> Result<ResolvedImage, PullError> {
        let name = reference.to_string();
        let image_err = |source| PullError::Image {
            reference: name.clone(),
            source,
        };
        let mut fetched = self
            .fetch_manifest_from(
                endpoints,
                reference,
                &reference.manifest_key(),
                reference.digest(),
            )
            .await?;
        self.store_document(reference, store, &fetched).await?;
        let mut index_digest = None;
        let mut depth = 0;
        while fetched.kind == ManifestKind::Index {
            depth += 1;
            if depth > MAX_INDEX_DEPTH {
                return Err(image_err(ImageError::TooDeep {
                    digest: fetched.digest,
                }));
            }
            let index = image::parse_index(&fetched.digest, &fetched.bytes).map_err(image_err)?;
            let chosen = image::choose(platform, &index).ok_or_else(|| {
                image_err(ImageError::NoMatchingPlatform {
                    digest: fetched.digest.clone(),
                    platform: platform.clone(),
                })
            })?;
            let child = image::descriptor_digest(&fetched.digest, chosen).map_err(image_err)?;
            index_digest.get_or_insert_with(|| fetched.digest.clone());
            fetched = self
                .fetch_manifest_from(endpoints, reference, &child.to_string(), Some(&child))
                .await?;
            self.store_document(reference, store, &fetched).await?;
        }

        let manifest = image::parse_manifest(&fetched.digest, &fetched.bytes).map_err(image_err)?;
        self.fetch_blob(
            endpoints,
            reference,
            &fetched.digest,
            manifest.config(),
            store,
        )
        .await?;
        let config_digest =
            image::descriptor_digest(&fetched.digest, manifest.config()).map_err(image_err)?;
        let config_bytes =
            store
                .read_bytes(&config_digest)
                .await
                .map_err(|source| PullError::Content {
                    reference: name.clone(),
                    digest: config_digest.clone(),
                    source,
                })?;
        let config = image::parse_config(&config_digest, &config_bytes).map_err(image_err)?;
        Ok(ResolvedImage {
            manifest_digest: fetched.digest,
            manifest_media_type: fetched.media_type,
            index_digest,
            manifest,
            config_digest,
            config,
        })
    }

    /// Pulls `reference` into `store`: [`RegistryClient::resolve`], then the layers (at most the
    /// configured number at once). Blobs already in the store are not fetched again.
    pub async fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        store: &ContentStore,
    ) -> Result<PulledImage, PullError> {
        let endpoints = self.pull_endpoints(reference)?;
        let resolved = self
            .resolve_at(&endpoints, reference, platform, store)
            .await?;
        let manifest_digest = &resolved.manifest_digest;
        // The futures are built eagerly (no closure in the stream) so that the whole pull future
        // is `Send` for any lifetime: callers run it inside generic `Send` futures.
        let fetches: Vec<_> = resolved
            .manifest
            .layers()
            .iter()
            .map(|descriptor| {
                self.fetch_blob(&endpoints, reference, manifest_digest, descriptor, store)
            })
            .collect();
        futures::stream::iter(fetches)
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(PulledImage {
            manifest_digest: resolved.manifest_digest,
            manifest_media_type: resolved.manifest_media_type,
            index_digest: resolved.index_digest,
            layers: resolved.manifest.layers().clone(),
            manifest: resolved.manifest,
            config_digest: resolved.config_digest,
            config: resolved.config,
        })
    }

    /// Fetches the blob `digest` of `size` bytes from `reference`'s repository into `store`
    /// (mirrors first, transient failures retried, digest and size verified before anything is
    /// stored); nothing is fetched when `store` has it.
    pub async fn fetch_blob_into(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        store: &ContentStore,
    ) -> Result<(), PullError> {
        if store.has(digest) {
            return Ok(());
        }
        let endpoints = self.pull_endpoints(reference)?;
        let what = format!("blob {digest}");
        with_fallback(&endpoints, reference, &what, |endpoint| {
            self.fetch_blob_at(endpoint, reference, digest, size, store)
        })
        .await
    }

    fn pull_endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>, PullError> {
        self.config
            .pull_endpoints(reference.registry(), reference.api_host())
            .map_err(|source| PullError::Transport {
                reference: reference.to_string(),
                source,
            })
    }

    async fn store_document(
        &self,
        reference: &Reference,
        store: &ContentStore,
        fetched: &FetchedManifest,
    ) -> Result<(), PullError> {
        store
            .put_bytes(&fetched.bytes)
            .await
            .map_err(|source| PullError::Content {
                reference: reference.to_string(),
                digest: fetched.digest.clone(),
                source,
            })?;
        Ok(())
    }

    async fn fetch_manifest_from(
        &self,
        endpoints: &[Endpoint],
        reference: &Reference,
        key: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, PullError> {
        with_fallback(endpoints, reference, "manifest", |endpoint| {
            self.fetch_manifest_at(endpoint, reference, key, expected)
        })
        .await
    }

    async fn fetch_manifest_at(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        key: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, PullError> {
        let name = reference.to_string();
        let transport_err = |source| PullError::Transport {
            reference: name.clone(),
            source,
        };
        let url = endpoint.url(&format!("/v2/{}/manifests/{key}", reference.repository()));
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let response = self
            .transport
            .send(
                endpoint,
                &Scope::pull(reference.repository()),
                Method::GET,
                &url,
                headers,
                &empty_body,
            )
            .await
            .map_err(transport_err)?;
        if response.status() == http::StatusCode::NOT_FOUND {
            return Err(PullError::ManifestNotFound { reference: name });
        }
        if !response.status().is_success() {
            return Err(transport_err(
                transport::status_error(Method::GET, &url, response).await,
            ));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = transport::read_limited(response, &url, MAX_MANIFEST_SIZE)
            .await
            .map_err(transport_err)?;
        let digest = Digest::of_bytes(&bytes);
        if let Some(expected) = expected
            && expected != &digest
        {
            return Err(PullError::ManifestDigestMismatch {
                reference: name,
                expected: expected.clone(),
                actual: digest,
            });
        }
        let (kind, media_type) = image::detect_kind(&digest, content_type.as_deref(), &bytes)
            .map_err(|source| PullError::Image {
                reference: name.clone(),
                source,
            })?;
        Ok(FetchedManifest {
            digest,
            kind,
            media_type,
            bytes,
        })
    }

    async fn fetch_blob(
        &self,
        endpoints: &[Endpoint],
        reference: &Reference,
        parent: &Digest,
        descriptor: &Descriptor,
        store: &ContentStore,
    ) -> Result<(), PullError> {
        let digest =
            image::descriptor_digest(parent, descriptor).map_err(|source| PullError::Image {
                reference: reference.to_string(),
                source,
            })?;
        if store.has(&digest) {
            return Ok(());
        }
        let what = format!("blob {digest}");
        with_fallback(endpoints, reference, &what, |endpoint| {
            self.fetch_blob_at(endpoint, reference, &digest, descriptor.size(), store)
        })
        .await
    }

    /// `GET` of blob `digest` from `endpoint`, answered with success.
    async fn blob_response(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<(String, http::Response<hyper::body::Incoming>), PullError> {
        let transport_err = |source| PullError::Transport {
            reference: reference.to_string(),
            source,
        };
        let url = endpoint.url(&format!("/v2/{}/blobs/{digest}", reference.repository()));
        let response = self
            .transport
            .send(
                endpoint,
                &Scope::pull(reference.repository()),
                Method::GET,
                &url,
                HeaderMap::new(),
                &empty_body,
            )
            .await
            .map_err(transport_err)?;
        if !response.status().is_success() {
            return Err(transport_err(
                transport::status_error(Method::GET, &url, response).await,
            ));
        }
        Ok((url, response))
    }

    /// Blob `digest` of `reference`'s repository as it downloads (from the registry itself,
    /// no retry): the caller verifies what it reads ([`BlobStream`] stops at `size` bytes).
    pub async fn blob_stream(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobStream, PullError> {
        let endpoint = self
            .config
            .endpoint(reference.registry(), reference.api_host());
        let (url, response) = self.blob_response(&endpoint, reference, digest).await?;
        Ok(BlobStream {
            reference: reference.to_string(),
            url,
            digest: digest.clone(),
            size,
            read: 0,
            body: response.into_body(),
        })
    }

    async fn fetch_blob_at(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        digest: &Digest,
        expected_size: u64,
        store: &ContentStore,
    ) -> Result<(), PullError> {
        let name = reference.to_string();
        let transport_err = |source| PullError::Transport {
            reference: name.clone(),
            source,
        };
        let (url, response) = self.blob_response(endpoint, reference, digest).await?;
        let content_err = |source| PullError::Content {
            reference: name.clone(),
            digest: digest.clone(),
            source,
        };
        let write_err = |source| PullError::Write {
            reference: name.clone(),
            digest: digest.clone(),
            source,
        };
        let size_err = |actual| PullError::BlobSize {
            reference: name.clone(),
            digest: digest.clone(),
            expected: expected_size,
            actual,
        };
        let mut writer = store
            .writer(Some(digest.clone()))
            .await
            .map_err(content_err)?;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                transport_err(TransportError::Body {
                    url: url.clone(),
                    message: e.to_string(),
                })
            })?;
            if let Ok(data) = frame.into_data() {
                let total = writer.written() + data.len() as u64;
                if total > expected_size {
                    return Err(size_err(total));
                }
                writer.write_all(&data).await.map_err(write_err)?;
            }
        }
        if writer.written() != expected_size {
            return Err(size_err(writer.written()));
        }
        writer.commit().await.map_err(content_err)?;
        Ok(())
    }
}
