//! Results to and from remote caches (`dagr-remote-cache`).
//!
//! A result's snapshots go out as layer chains: each snapshot from its root up is one layer,
//! the image layer blob it was unpacked from when there is one (so exports reuse the image
//! layers the registry has) and otherwise its diff against its parent, zstd-compressed (several
//! times faster than gzip both ways; only engines read these layers), kept per snapshot so a
//! snapshot is diffed once per engine run. They come back as snapshots named by their chain
//! ids, each layer unpacked as it downloads (the unpacker of image layers: never outside the
//! target) and committed only once its bytes match its digest; the blob is not stored (a
//! download that fails is fetched again into the content store, with retries).
//!
//! Imports are per session ([`Worker::begin_cache_imports`]): each cache's index is read as
//! the session starts; a lookup of a key waits for it, and fetches blobs only for a hit. Any
//! failure (registry down, missing or damaged blob, refused credentials) is a warning in the
//! engine log and on the solve's trace, and the op runs here instead.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dagr_registry::Reference;
use dagr_remote_cache::{
    CacheEntry, CacheIndex, CacheSpec, ExportReport, LayerInfo, RemoteCache, RemoteCacheError,
};
use dagr_snapshot::{Digest, LayerDescriptor};
use dagr_solver::{CacheKey, ResultRef, RunCtx, RunOutput, Vertex};
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use crate::{ResultMeta, Worker, WorkerError};

/// The leases of exports under way (a previous engine's are released when the worker opens).
pub(crate) const EXPORT_LEASE_PREFIX: &str = "remote-export-";

type IndexLoad = Shared<BoxFuture<'static, Result<Arc<CacheIndex>, Arc<RemoteCacheError>>>>;

/// One cache a session imports from, its index being read.
#[derive(Clone)]
struct ImportSource {
    reference: Reference,
    index: IndexLoad,
    /// A failed read is reported once per session, not per lookup.
    read_failure_reported: Arc<std::sync::atomic::AtomicBool>,
}

/// Counters of remote cache use since the engine started.
#[derive(Debug, Default)]
pub struct RemoteCacheStats {
    /// Results imported instead of run.
    pub hits: AtomicU64,
    /// Imports that failed (the op ran here).
    pub import_errors: AtomicU64,
    /// Layer blobs fetched for imports.
    pub layers_fetched: AtomicU64,
}

/// The worker's remote cache state.
pub(crate) struct RemoteCaches {
    cache: RemoteCache,
    imports: parking_lot::Mutex<HashMap<String, Vec<ImportSource>>>,
    /// Snapshot key -> its layer (blob digest and description), once computed.
    layers: parking_lot::Mutex<HashMap<String, (Digest, LayerInfo)>>,
    stats: RemoteCacheStats,
}

impl RemoteCaches {
    pub(crate) fn new(cache: RemoteCache) -> Self {
        RemoteCaches {
            cache,
            imports: Default::default(),
            layers: Default::default(),
            stats: RemoteCacheStats::default(),
        }
    }
}

/// How many chunks of a download may wait for the unpacker (HTTP frames of up to 16 KiB: a
/// few MiB), so the download goes on while the unpacker writes.
const CHUNKS_AHEAD: usize = 512;

/// A download read from a blocking thread: a task moves its chunks through a bounded channel
/// (the download waits when the unpacker is far behind) and ends when the reader is dropped.
struct BlobReader {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
    pump: tokio::task::JoinHandle<()>,
}

impl BlobReader {
    fn start(mut download: dagr_registry::BlobStream) -> BlobReader {
        let (tx, chunks) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let pump = tokio::spawn(async move {
            while let Some(chunk) = download.next_chunk().await {
                let chunk = chunk.map_err(std::io::Error::other);
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        BlobReader {
            chunks,
            current: bytes::Bytes::new(),
            pump,
        }
    }
}

impl std::io::Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl Drop for BlobReader {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Worker {
    /// Starts reading the indexes of `specs` for `session_id`: its solves look keys up in them
    /// (in order) before running an op. Replaces what the session had.
    pub fn begin_cache_imports(&self, session_id: &str, specs: &[CacheSpec]) {
        if specs.is_empty() {
            return;
        }
        let sources: Vec<ImportSource> = specs
            .iter()
            .map(|spec| {
                let cache = self.inner.remote.cache.clone();
                let reference = spec.reference.clone();
                let index = async move { cache.load(&reference).await.map_err(Arc::new) }
                    .boxed()
                    .shared();
                // Read now, while the session uploads and resolves; lookups join this read.
                tokio::spawn(index.clone());
                ImportSource {
                    reference: spec.reference.clone(),
                    index,
                    read_failure_reported: Default::default(),
                }
            })
            .collect();
        self.inner
            .remote
            .imports
            .lock()
            .insert(session_id.to_owned(), sources);
    }

    /// Counters of remote cache use.
    pub fn remote_cache_stats(&self) -> &RemoteCacheStats {
        &self.inner.remote.stats
    }

    pub(crate) fn end_cache_imports(&self, session_id: &str) {
        self.inner.remote.imports.lock().remove(session_id);
    }

    /// The result of `vertex` from the session's remote caches, if one has its key.
    pub(crate) async fn import_result(&self, vertex: &Vertex, ctx: &RunCtx) -> Option<RunOutput> {
        let sources = self
            .inner
            .remote
            .imports
            .lock()
            .get(ctx.session_id())
            .cloned()?;
        let key = ctx.key().to_string();
        for source in sources {
            let index = match source.index.clone().await {
                Ok(index) => index,
                Err(e) => {
                    if !source.read_failure_reported.swap(true, Ordering::Relaxed) {
                        self.warn_import(ctx, &source.reference, &key, &*e, true);
                    }
                    continue;
                }
            };
            let Some(entry) = index.entries.get(&key) else {
                continue;
            };
            let span = ctx.span().start_with(
                format!(
                    "import {} from {}",
                    vertex.op().describe(),
                    source.reference
                ),
                vec![(dagr_telemetry::attr::INTERNAL, true.into())],
            );
            let imported = self.import_entry(&source.reference, &index, entry).await;
            span.end_with(&imported);
            match imported {
                Ok(out) => {
                    self.inner.remote.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(out);
                }
                Err(e) => self.warn_import(ctx, &source.reference, &key, &e, false),
            }
        }
        None
    }

    fn warn_import(
        &self,
        ctx: &RunCtx,
        reference: &Reference,
        key: &str,
        error: &dyn std::error::Error,
        index_read: bool,
    ) {
        self.inner
            .remote
            .stats
            .import_errors
            .fetch_add(1, Ordering::Relaxed);
        let what = if index_read {
            "reading the remote cache failed; running ops here"
        } else {
            "importing from the remote cache failed; running the op here"
        };
        tracing::warn!(cache = %reference, %key, error = %error, "{what}");
        let span = ctx.span().start_with(
            format!("remote cache {reference}: {what}"),
            vec![(dagr_telemetry::attr::INTERNAL, true.into())],
        );
        span.fail(&error.to_string());
    }

    async fn import_entry(
        &self,
        reference: &Reference,
        index: &CacheIndex,
        entry: &CacheEntry,
    ) -> Result<RunOutput, WorkerError> {
        let started = std::time::Instant::now();
        let mut tops = Vec::with_capacity(entry.outputs.len());
        for chain in &entry.outputs {
            if chain.is_empty() {
                tops.push(self.empty_snapshot().await?);
                continue;
            }
            let layers: Vec<LayerDescriptor> = chain
                .iter()
                .map(|d| LayerDescriptor {
                    digest: d.clone(),
                    media_type: index
                        .layers
                        .get(d)
                        .map(|l| l.media_type.clone())
                        .unwrap_or_default(),
                })
                .collect();
            let mut top: Option<String> = None;
            for n in 1..=layers.len() {
                top = Some(
                    self.import_layer(reference, index, &layers[..n], top)
                        .await?,
                );
            }
            tops.push(top.unwrap_or_default());
        }
        if tops.is_empty() {
            return Err(crate::op_err("import", "cache entry has no outputs"));
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "imported a result from a remote cache"
        );
        let id = tops.remove(0);
        let mut meta: ResultMeta = serde_json::from_value(entry.metadata.clone())
            .map_err(|e| crate::op_err("import", format!("cache entry metadata: {e}")))?;
        meta.outputs = tops;
        Ok(RunOutput::new(ResultRef::new(id, meta.into_value())))
    }

    /// The top snapshot of `layers` once its last layer is unpacked on `below` (the snapshot of
    /// the others): already there, from the content store, or unpacked as it downloads
    /// (verified before it is committed; a download that fails is fetched again into the
    /// content store, with retries, then unpacked from there).
    async fn import_layer(
        &self,
        reference: &Reference,
        index: &CacheIndex,
        layers: &[LayerDescriptor],
        below: Option<String>,
    ) -> Result<String, WorkerError> {
        let snapshots = &self.inner.snapshots;
        if let Some(top) = snapshots.unpacked_chain(layers)? {
            return Ok(top);
        }
        let Some(layer) = layers.last() else {
            return Err(crate::op_err("import", "no layer to import"));
        };
        let cache = &self.inner.remote.cache;
        let size = index.layers.get(&layer.digest).map_or(0, |l| l.size);
        let stats = &self.inner.remote.stats;
        if !self.inner.content.has(&layer.digest) {
            stats.layers_fetched.fetch_add(1, Ordering::Relaxed);
            let streamed = match cache.stream(reference, &layer.digest, size).await {
                Ok(download) => snapshots
                    .unpack_layer_from(BlobReader::start(download), layer, below.as_deref())
                    .await
                    .map_err(WorkerError::from),
                Err(e) => Err(WorkerError::RemoteCache(Box::new(e))),
            };
            match streamed {
                Ok(top) => return Ok(top),
                Err(e) => {
                    tracing::debug!(layer = %layer.digest, error = %e, "unpacking a layer as it downloaded failed; fetching it again");
                    cache
                        .fetch(reference, &layer.digest, size)
                        .await
                        .map_err(|e| WorkerError::RemoteCache(Box::new(e)))?;
                }
            }
        }
        Ok(snapshots
            .unpack_image_layers(&self.inner.content, layers, &Default::default())
            .await?)
    }

    /// Writes `results` into the remote cache `spec`: their snapshots as layers (the blobs the
    /// registry lacks are uploaded), merged into the cache's index. Results whose snapshots are
    /// gone are left out.
    pub async fn export_results(
        &self,
        spec: &CacheSpec,
        results: &[(CacheKey, ResultRef)],
    ) -> Result<ExportReport, WorkerError> {
        // The diffs written for the export are referenced by nothing else until they are
        // pushed: a lease keeps a collection running meanwhile from removing them.
        let lease = format!("{EXPORT_LEASE_PREFIX}{}", crate::random_id());
        self.inner.snapshots.create_lease(&lease).await?;
        let exported = self.export_leased(&lease, spec, results).await;
        if let Err(e) = self.inner.snapshots.delete_lease(&lease).await {
            tracing::warn!(%lease, error = %e, "removing the export's lease");
        }
        exported
    }

    async fn export_leased(
        &self,
        lease: &str,
        spec: &CacheSpec,
        results: &[(CacheKey, ResultRef)],
    ) -> Result<ExportReport, WorkerError> {
        let mut additions = CacheIndex::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (key, result) in results {
            let mut outputs = Vec::new();
            let mut failed = None;
            for snapshot in Worker::result_snapshots(result) {
                match self.layer_chain(&snapshot).await {
                    Ok(chain) => {
                        let mut digests = Vec::with_capacity(chain.len());
                        for (digest, layer) in chain {
                            self.inner.snapshots.lease_blob(lease, &digest).await?;
                            additions.layers.insert(digest.clone(), layer);
                            digests.push(digest);
                        }
                        outputs.push(digests);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                tracing::warn!(%key, error = %e, "leaving a result out of the remote cache export");
                continue;
            }
            let mut meta = ResultMeta::of(result);
            meta.outputs.clear();
            additions.entries.insert(
                key.to_string(),
                CacheEntry {
                    outputs,
                    metadata: meta.into_value(),
                    created_unix: now,
                },
            );
        }
        self.inner
            .remote
            .cache
            .export(&spec.reference, &additions)
            .await
            .map_err(|e| WorkerError::RemoteCache(Box::new(e)))
    }

    /// The layers of `snapshot`, bottom first.
    async fn layer_chain(&self, snapshot: &str) -> Result<Vec<(Digest, LayerInfo)>, WorkerError> {
        let mut keys = Vec::new();
        let mut current = Some(snapshot.to_owned());
        while let Some(key) = current {
            current = self.inner.snapshots.stat(&key)?.parent;
            keys.push(key);
        }
        keys.reverse();
        let mut chain = Vec::with_capacity(keys.len());
        for key in keys {
            chain.push(self.snapshot_layer(&key).await?);
        }
        Ok(chain)
    }

    /// The layer of one snapshot: the image layer it came from, else its diff (computed once).
    async fn snapshot_layer(&self, key: &str) -> Result<(Digest, LayerInfo), WorkerError> {
        let known = self.inner.remote.layers.lock().get(key).cloned();
        if let Some((digest, layer)) = known
            && self.inner.content.has(&digest)
        {
            return Ok((digest, layer));
        }
        let content = &self.inner.content;
        let found = match self.inner.snapshots.image_layer_of(key)? {
            Some((blob, diff_id)) if content.has(&blob) => {
                let mut head = [0u8; 4];
                let file = content.open_blob(&blob).await?;
                let n = {
                    use tokio::io::AsyncReadExt as _;
                    let mut file = file;
                    file.read(&mut head).await.map_err(|e| {
                        crate::op_err("export", format!("reading layer {blob}: {e}"))
                    })?
                };
                let layer = LayerInfo {
                    media_type: dagr_snapshot::Compression::detect(&head[..n])
                        .media_type()
                        .to_owned(),
                    size: content.size(&blob)?,
                    diff_id,
                };
                (blob, layer)
            }
            _ => {
                let diff = self
                    .inner
                    .snapshots
                    .diff_with(content, key, dagr_snapshot::Compression::Zstd)
                    .await
                    .map_err(|e| crate::op_err("export", format!("diffing snapshot {key}: {e}")))?;
                let layer = LayerInfo {
                    media_type: diff.media_type.to_owned(),
                    size: diff.size,
                    diff_id: diff.diff_id,
                };
                (diff.digest, layer)
            }
        };
        self.inner
            .remote
            .layers
            .lock()
            .insert(key.to_owned(), found.clone());
        Ok(found)
    }
}
