//! [`RegistryClient`]: the entry point for talking to registries.

use std::sync::Arc;

use crate::auth::CredentialsProvider;
use crate::transport::{RegistryConfig, Transport};

/// Default number of blobs transferred at once by one pull or push.
pub const DEFAULT_CONCURRENCY: usize = 3;
/// Default size above which blobs are pushed in chunks (`PATCH`), and the chunk size.
pub const DEFAULT_CHUNK_SIZE: u64 = 16 << 20;

/// Pulls and pushes images over the OCI distribution API. Cheap to clone; clones share the
/// connection pool and the token cache. Construction opens no connection and spawns nothing.
///
/// Tokens are cached per client and its credentials: give each session its own client with
/// [`RegistryClient::with_credentials`] so that one session's access never serves another.
#[derive(Clone)]
pub struct RegistryClient {
    pub(crate) config: Arc<RegistryConfig>,
    pub(crate) transport: Transport,
    pub(crate) concurrency: usize,
    pub(crate) chunk_size: u64,
    /// Uploads wait on it (chunk by chunk) to stay under a rate; `None`: as fast as possible.
    pub(crate) upload_pacer: Option<Arc<UploadPacer>>,
}

/// Keeps the bytes uploaded through one client under a rate: each upload request waits until
/// the bytes sent so far, its own included, fit in the time elapsed since the first.
#[derive(Debug)]
pub(crate) struct UploadPacer {
    bytes_per_second: u64,
    state: parking_lot::Mutex<Option<(tokio::time::Instant, u64)>>,
}

impl UploadPacer {
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        UploadPacer {
            bytes_per_second: bytes_per_second.max(1),
            state: parking_lot::Mutex::new(None),
        }
    }

    /// Waits until `len` more bytes may be sent.
    pub(crate) async fn pace(&self, len: u64) {
        let deadline = {
            let mut state = self.state.lock();
            let (start, sent) = state.get_or_insert_with(|| (tokio::time::Instant::now(), 0));
            let due =
                std::time::Duration::from_secs_f64(*sent as f64 / self.bytes_per_second as f64);
            *sent += len;
            *start + due
        };
        tokio::time::sleep_until(deadline).await;
    }
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("config", &self.config)
            .field("concurrency", &self.concurrency)
            .field("chunk_size", &self.chunk_size)
            .finish()
    }
}

impl RegistryClient {
    /// A client for the hosts described by `config`, authenticating with `credentials`.
    pub fn new(config: RegistryConfig, credentials: Arc<dyn CredentialsProvider>) -> Self {
        Self {
            transport: Transport::new(&config, credentials),
            config: Arc::new(config),
            concurrency: DEFAULT_CONCURRENCY,
            chunk_size: DEFAULT_CHUNK_SIZE,
            upload_pacer: None,
        }
    }

    /// A client sharing this one's configuration and connection pool, authenticating with
    /// `credentials`, with its own (empty) token cache.
    pub fn with_credentials(&self, credentials: Arc<dyn CredentialsProvider>) -> Self {
        Self {
            config: self.config.clone(),
            transport: self.transport.with_credentials(credentials),
            concurrency: self.concurrency,
            chunk_size: self.chunk_size,
            upload_pacer: self.upload_pacer.clone(),
        }
    }

    /// How many blobs one pull or push transfers at once (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Blobs larger than this are pushed in chunks of this size (at least 1 byte).
    pub fn with_chunk_size(mut self, chunk_size: u64) -> Self {
        self.chunk_size = chunk_size.max(1);
        self
    }

    /// Uploads through this client (and its clones) stay under `bytes_per_second` on average,
    /// paced request by request; pair it with a chunk size of about a second's worth.
    pub fn with_upload_rate(mut self, bytes_per_second: u64) -> Self {
        self.upload_pacer = Some(Arc::new(UploadPacer::new(bytes_per_second)));
        self
    }

    /// The hosts configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::UploadPacer;
    use std::time::Duration;

    /// On tokio's paused clock (no wall time): requests wait until the bytes before them fit
    /// the rate.
    #[tokio::test(start_paused = true)]
    async fn uploads_keep_to_the_rate() {
        let pacer = UploadPacer::new(1000);
        let start = tokio::time::Instant::now();
        pacer.pace(500).await;
        pacer.pace(500).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        pacer.pace(2000).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        pacer.pace(1).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
