//! Pushing: blobs (skipped when present, optionally mounted from another repository, uploaded
//! monolithically or in chunks), then manifests, then the index, under a tag or by digest.

use bytes::Bytes;
use dagr_snapshot::{ContentError, ContentStore, Digest};
use futures::{StreamExt as _, TryStreamExt as _};
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tokio::io::AsyncReadExt as _;

use crate::client::RegistryClient;
use crate::image::{self, ImageError, ManifestKind};
use crate::reference::Reference;
use crate::transport::{
    self, Endpoint, Scope, TransportError, bytes_body, empty_body, encode_query,
};

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push {reference}: {source}")]
    Transport {
        reference: String,
        #[source]
        source: TransportError,
    },
    #[error("push {reference}: {source}")]
    Image {
        reference: String,
        #[source]
        source: ImageError,
    },
    #[error("push {reference}: blob {digest}: {source}")]
    Content {
        reference: String,
        digest: Digest,
        #[source]
        source: ContentError,
    },
    #[error("push {reference}: reading blob {digest} failed: {source}")]
    Read {
        reference: String,
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("push {reference}: upload of {digest} answered without a location")]
    MissingLocation { reference: String, digest: Digest },
    #[error("push {reference}: registry stored manifest as {actual}, expected {expected}")]
    ManifestDigestMismatch {
        reference: String,
        expected: Digest,
        actual: String,
    },
}

/// Whether a blob push uploaded bytes, found the blob present, or mounted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    AlreadyPresent,
    Mounted,
    Uploaded,
}

impl PushError {
    /// Whether trying again may succeed: connection failures, timeouts, broken bodies, 429 and
    /// 5xx answers.
    pub fn is_transient(&self) -> bool {
        matches!(self, PushError::Transport { source, .. } if source.is_transient())
    }

    /// How long the registry asked to wait before trying again.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            PushError::Transport { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

/// Runs `push` (a whole blob upload or a manifest put, which start over cleanly) again on
/// transient failures, as pulls do: [`transport::ATTEMPTS`] tries, waiting as the registry asks
/// ([`transport::retry_delay`]).
pub async fn retrying<T, F, Fut>(
    reference: &Reference,
    what: &str,
    mut push: F,
) -> Result<T, PushError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PushError>>,
{
    let mut attempt = 1;
    loop {
        match push().await {
            Ok(pushed) => return Ok(pushed),
            Err(e) if e.is_transient() && attempt < transport::ATTEMPTS => {
                let delay = transport::retry_delay(attempt, e.retry_after());
                tracing::debug!(%reference, attempt, ?delay, error = %e, "retrying {what} push");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn with_query(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

impl RegistryClient {
    /// Pushes the manifest or index `root` (with everything it references, all in `store`) to
    /// `reference` and returns `root`. An index's manifests are pushed by digest first. Blobs are
    /// mounted from `mount_from` (a repository on the same registry) when given and possible.
    pub async fn push(
        &self,
        store: &ContentStore,
        root: &Digest,
        reference: &Reference,
        mount_from: Option<&str>,
    ) -> Result<Digest, PushError> {
        let name = reference.to_string();
        let image_err = |source| PushError::Image {
            reference: name.clone(),
            source,
        };
        let bytes = self.read_blob(store, reference, root).await?;
        let (kind, media_type) = image::detect_kind(root, None, &bytes).map_err(image_err)?;
        if kind == ManifestKind::Index {
            let index = image::parse_index(root, &bytes).map_err(image_err)?;
            for child in index.manifests() {
                let child_digest = image::descriptor_digest(root, child).map_err(image_err)?;
                let child_bytes = self.read_blob(store, reference, &child_digest).await?;
                let (child_kind, child_type) =
                    image::detect_kind(&child_digest, None, &child_bytes).map_err(image_err)?;
                if child_kind != ManifestKind::Manifest {
                    return Err(image_err(ImageError::TooDeep {
                        digest: root.clone(),
                    }));
                }
                self.push_image_blobs(store, reference, &child_digest, &child_bytes, mount_from)
                    .await?;
                let key = child_digest.to_string();
                retrying(reference, "manifest", || {
                    self.push_manifest(reference, &key, &child_type, child_bytes.clone())
                })
                .await?;
            }
        } else {
            self.push_image_blobs(store, reference, root, &bytes, mount_from)
                .await?;
        }
        let key = reference.manifest_key();
        retrying(reference, "manifest", || {
            self.push_manifest(reference, &key, &media_type, bytes.clone())
        })
        .await
    }

    async fn read_blob(
        &self,
        store: &ContentStore,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<Bytes, PushError> {
        store
            .read_bytes(digest)
            .await
            .map(Bytes::from)
            .map_err(|source| PushError::Content {
                reference: reference.to_string(),
                digest: digest.clone(),
                source,
            })
    }

    async fn push_image_blobs(
        &self,
        store: &ContentStore,
        reference: &Reference,
        manifest_digest: &Digest,
        manifest_bytes: &[u8],
        mount_from: Option<&str>,
    ) -> Result<(), PushError> {
        let image_err = |source| PushError::Image {
            reference: reference.to_string(),
            source,
        };
        let manifest = image::parse_manifest(manifest_digest, manifest_bytes).map_err(image_err)?;
        let mut digests =
            vec![image::descriptor_digest(manifest_digest, manifest.config()).map_err(image_err)?];
        for layer in manifest.layers() {
            digests.push(image::descriptor_digest(manifest_digest, layer).map_err(image_err)?);
        }
        futures::stream::iter(digests)
            .map(|digest| async move {
                retrying(reference, "blob", || {
                    self.push_blob(store, reference, &digest, mount_from)
                })
                .await
                .map(|_| ())
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    fn push_endpoint(&self, reference: &Reference) -> Endpoint {
        self.config
            .endpoint(reference.registry(), reference.api_host())
    }

    /// Pushes one blob from `store` to `reference`'s repository: skipped when the registry has
    /// it, mounted from `mount_from` when given and the registry agrees, else uploaded in one
    /// `PUT` (up to the chunk size) or in `PATCH` chunks.
    pub async fn push_blob(
        &self,
        store: &ContentStore,
        reference: &Reference,
        digest: &Digest,
        mount_from: Option<&str>,
    ) -> Result<BlobPush, PushError> {
        let name = reference.to_string();
        let transport_err = |source| PushError::Transport {
            reference: name.clone(),
            source,
        };
        let content_err = |source| PushError::Content {
            reference: name.clone(),
            digest: digest.clone(),
            source,
        };
        let size = store.size(digest).map_err(content_err)?;
        let endpoint = self.push_endpoint(reference);
        let repository = reference.repository();
        let scope = match mount_from {
            Some(from) if from != repository => Scope::push(repository).and_pull(from),
            _ => Scope::push(repository),
        };

        let head_url = endpoint.url(&format!("/v2/{repository}/blobs/{digest}"));
        let response = self
            .transport
            .send(
                &endpoint,
                &scope,
                Method::HEAD,
                &head_url,
                HeaderMap::new(),
                &empty_body,
            )
            .await
            .map_err(transport_err)?;
        match response.status() {
            s if s.is_success() => return Ok(BlobPush::AlreadyPresent),
            StatusCode::NOT_FOUND => {}
            _ => {
                return Err(transport_err(
                    transport::status_error(Method::HEAD, &head_url, response).await,
                ));
            }
        }

        let mut start_url = endpoint.url(&format!("/v2/{repository}/blobs/uploads/"));
        if let Some(from) = mount_from.filter(|from| *from != repository) {
            start_url = with_query(
                &start_url,
                &format!(
                    "mount={}&from={}",
                    encode_query(&digest.to_string()),
                    encode_query(from)
                ),
            );
        }
        let response = self
            .transport
            .send(
                &endpoint,
                &scope,
                Method::POST,
                &start_url,
                HeaderMap::new(),
                &empty_body,
            )
            .await
            .map_err(transport_err)?;
        match response.status() {
            StatusCode::CREATED => return Ok(BlobPush::Mounted),
            StatusCode::ACCEPTED => {}
            _ => {
                return Err(transport_err(
                    transport::status_error(Method::POST, &start_url, response).await,
                ));
            }
        }
        let mut location = self.location(reference, digest, &start_url, response.headers())?;

        let mut file = store.open_blob(digest).await.map_err(content_err)?;
        let read_err = |source| PushError::Read {
            reference: name.clone(),
            digest: digest.clone(),
            source,
        };
        let digest_query = format!("digest={}", encode_query(&digest.to_string()));
        if size <= self.chunk_size {
            let mut buffer = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut buffer).await.map_err(read_err)?;
            let body = Bytes::from(buffer);
            if let Some(pacer) = &self.upload_pacer {
                pacer.pace(body.len() as u64).await;
            }
            let url = with_query(&location, &digest_query);
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            let response = self
                .transport
                .send(&endpoint, &scope, Method::PUT, &url, headers, &move || {
                    bytes_body(body.clone())
                })
                .await
                .map_err(transport_err)?;
            if response.status() != StatusCode::CREATED {
                return Err(transport_err(
                    transport::status_error(Method::PUT, &url, response).await,
                ));
            }
            return Ok(BlobPush::Uploaded);
        }

        let chunk_len = usize::try_from(self.chunk_size).unwrap_or(usize::MAX);
        let mut offset: u64 = 0;
        while offset < size {
            let mut chunk = Vec::with_capacity(chunk_len.min(16 << 20));
            (&mut file)
                .take(self.chunk_size)
                .read_to_end(&mut chunk)
                .await
                .map_err(read_err)?;
            if chunk.is_empty() {
                return Err(read_err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("blob ended at {offset} of {size} bytes"),
                )));
            }
            let end = offset + chunk.len() as u64 - 1;
            let body = Bytes::from(chunk);
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            if let Ok(range) = HeaderValue::from_str(&format!("{offset}-{end}")) {
                headers.insert(CONTENT_RANGE, range);
            }
            let len = body.len() as u64;
            if let Some(pacer) = &self.upload_pacer {
                pacer.pace(len).await;
            }
            let response = self
                .transport
                .send(
                    &endpoint,
                    &scope,
                    Method::PATCH,
                    &location,
                    headers,
                    &move || bytes_body(body.clone()),
                )
                .await
                .map_err(transport_err)?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(transport_err(
                    transport::status_error(Method::PATCH, &location, response).await,
                ));
            }
            location = self.location(reference, digest, &location, response.headers())?;
            offset += len;
        }
        let url = with_query(&location, &digest_query);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
        let response = self
            .transport
            .send(&endpoint, &scope, Method::PUT, &url, headers, &empty_body)
            .await
            .map_err(transport_err)?;
        if response.status() != StatusCode::CREATED {
            return Err(transport_err(
                transport::status_error(Method::PUT, &url, response).await,
            ));
        }
        Ok(BlobPush::Uploaded)
    }

    fn location(
        &self,
        reference: &Reference,
        digest: &Digest,
        base: &str,
        headers: &HeaderMap,
    ) -> Result<String, PushError> {
        let location = headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| PushError::MissingLocation {
                reference: reference.to_string(),
                digest: digest.clone(),
            })?;
        transport::resolve_location(base, location).map_err(|source| PushError::Transport {
            reference: reference.to_string(),
            source,
        })
    }

    /// Puts a manifest or index under `key` (a tag or its digest) in `reference`'s repository and
    /// returns its digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        key: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, PushError> {
        let name = reference.to_string();
        let transport_err = |source| PushError::Transport {
            reference: name.clone(),
            source,
        };
        let digest = Digest::of_bytes(&bytes);
        let endpoint = self.push_endpoint(reference);
        let url = endpoint.url(&format!("/v2/{}/manifests/{key}", reference.repository()));
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| PushError::Image {
                reference: name.clone(),
                source: ImageError::UnsupportedMediaType {
                    digest: digest.clone(),
                    media_type: media_type.to_string(),
                },
            })?,
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        let response = self
            .transport
            .send(
                &endpoint,
                &Scope::push(reference.repository()),
                Method::PUT,
                &url,
                headers,
                &move || bytes_body(bytes.clone()),
            )
            .await
            .map_err(transport_err)?;
        if response.status() != StatusCode::CREATED {
            return Err(transport_err(
                transport::status_error(Method::PUT, &url, response).await,
            ));
        }
        if let Some(stored) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && stored != digest.to_string()
        {
            return Err(PushError::ManifestDigestMismatch {
                reference: name,
                expected: digest,
                actual: stored.to_string(),
            });
        }
        Ok(digest)
    }
}
