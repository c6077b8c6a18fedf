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

    /// The hosts configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }
}
