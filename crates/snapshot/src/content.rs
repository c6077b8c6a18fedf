//! [`ContentStore`]: blobs addressed by their sha256 [`Digest`], written atomically through a
//! verifying [`BlobWriter`] (temp file in the store, hash while writing, fsync, rename).
//!
//! Layout under the root: `blobs/sha256/<hex>` for committed blobs, `ingest/` for temp files of
//! writers in progress (cleared by [`ContentStore::open`], since a writer never outlives the process).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::digest::Digest;

/// Errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content store io error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blob {0} not found in the content store")]
    NotFound(Digest),
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    Corrupt { digest: Digest, actual: Digest },
    #[error("content store background task failed: {0}")]
    Task(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One committed blob, as listed by [`ContentStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    /// When the blob was last written (a re-write of an existing blob refreshes it).
    pub modified: SystemTime,
}

struct Inner {
    blobs_dir: PathBuf,
    ingest_dir: PathBuf,
    next_temp: AtomicU64,
}

/// A content-addressed blob store shared by all sessions. Cheap to clone.
#[derive(Clone)]
pub struct ContentStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentStore")
            .field("blobs_dir", &self.inner.blobs_dir)
            .finish()
    }
}

impl ContentStore {
    /// Opens (creating if needed) a store under `root` and removes stale temp files left by writers
    /// of a previous process. Open one store per root per process.
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let blobs_dir = root.join("blobs").join("sha256");
        let ingest_dir = root.join("ingest");
        std::fs::create_dir_all(&blobs_dir).map_err(io_err(&blobs_dir))?;
        std::fs::create_dir_all(&ingest_dir).map_err(io_err(&ingest_dir))?;
        for entry in std::fs::read_dir(&ingest_dir).map_err(io_err(&ingest_dir))? {
            let entry = entry.map_err(io_err(&ingest_dir))?;
            let path = entry.path();
            let removed = if entry.file_type().map_err(io_err(&path))?.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io_err(&path))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                blobs_dir,
                ingest_dir,
                next_temp: AtomicU64::new(0),
            }),
        })
    }

    /// Whether a committed blob with this digest exists.
    pub fn has(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Where the committed blob `d` lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.inner.blobs_dir.join(d.hex())
    }

    /// Size in bytes of the committed blob `d`.
    pub fn size(&self, d: &Digest) -> Result<u64, ContentError> {
        let path = self.blob_path(d);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(d.clone()))
            }
            Err(source) => Err(ContentError::Io { path, source }),
        }
    }

    fn new_temp_path(&self) -> PathBuf {
        let n = self.inner.next_temp.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.inner
            .ingest_dir
            .join(format!("{}-{n}-{nanos}", std::process::id()))
    }

    /// Starts writing a blob. If `expected` is given, [`BlobWriter::commit`] refuses content with
    /// another digest.
    pub async fn writer(&self, expected: Option<Digest>) -> Result<BlobWriter, ContentError> {
        let temp_path = self.new_temp_path();
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .await
            .map_err(io_err(&temp_path))?;
        Ok(BlobWriter {
            store: self.clone(),
            file,
            temp: TempGuard(Some(temp_path)),
            hasher: Sha256::new(),
            size: 0,
            expected,
        })
    }

    /// Synchronous writer for blocking contexts (layer diffs run on blocking threads).
    pub(crate) fn sync_writer(&self) -> Result<SyncBlobWriter, ContentError> {
        let temp_path = self.new_temp_path();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .map_err(io_err(&temp_path))?;
        Ok(SyncBlobWriter {
            store: self.clone(),
            file: std::io::BufWriter::with_capacity(256 * 1024, file),
            temp: TempGuard(Some(temp_path)),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Stores `bytes` and returns their digest (a no-op if the blob already exists).
    pub async fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, ContentError> {
        let digest = Digest::of_bytes(bytes);
        if self.has(&digest) {
            return Ok(digest);
        }
        let mut w = self.writer(Some(digest)).await?;
        let temp = w.temp_path().to_owned();
        w.write_all(bytes).await.map_err(io_err(&temp))?;
        w.commit().await
    }

    /// Reads a whole blob into memory and verifies its digest. Meant for small blobs (manifests, configs).
    pub async fn read_bytes(&self, d: &Digest) -> Result<Vec<u8>, ContentError> {
        let path = self.blob_path(d);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound(d.clone()));
            }
            Err(source) => return Err(ContentError::Io { path, source }),
        };
        let actual = Digest::of_bytes(&bytes);
        if &actual != d {
            return Err(ContentError::Corrupt {
                digest: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Opens a committed blob for reading.
    pub async fn open_blob(&self, d: &Digest) -> Result<tokio::fs::File, ContentError> {
        let path = self.blob_path(d);
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(d.clone()))
            }
            Err(source) => Err(ContentError::Io { path, source }),
        }
    }

    /// Opens a committed blob for blocking reads.
    pub(crate) fn open_blob_sync(&self, d: &Digest) -> Result<std::fs::File, ContentError> {
        let path = self.blob_path(d);
        match std::fs::File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(d.clone()))
            }
            Err(source) => Err(ContentError::Io { path, source }),
        }
    }

    /// Deletes a committed blob. Deleting a missing blob is an error naming it.
    pub fn delete(&self, d: &Digest) -> Result<(), ContentError> {
        let path = self.blob_path(d);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(d.clone()))
            }
            Err(source) => Err(ContentError::Io { path, source }),
        }
    }

    /// All committed blobs.
    pub fn list(&self) -> Result<Vec<BlobInfo>, ContentError> {
        let dir = &self.inner.blobs_dir;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            let path = entry.path();
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted concurrently.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ContentError::Io { path, source }),
            };
            let modified = meta.modified().map_err(io_err(&path))?;
            out.push(BlobInfo {
                digest,
                size: meta.len(),
                modified,
            });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Moves a finished, fsynced temp file into place as blob `digest`.
    fn install(&self, temp: &Path, digest: &Digest) -> Result<(), ContentError> {
        let target = self.blob_path(digest);
        if target.is_file() {
            // Deduplicated: keep the existing blob, refresh its time for GC ordering.
            if let Ok(f) = std::fs::File::open(&target) {
                let _ = f.set_modified(SystemTime::now());
            }
            std::fs::remove_file(temp).map_err(io_err(temp))?;
            return Ok(());
        }
        std::fs::rename(temp, &target).map_err(io_err(&target))?;
        let dir = &self.inner.blobs_dir;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Ok(())
    }
}

/// Removes the temp file on drop unless disarmed.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes one blob into a temp file of the store, hashing as it goes. Nothing becomes visible until
/// [`BlobWriter::commit`]; dropping the writer removes its temp file.
pub struct BlobWriter {
    store: ContentStore,
    file: tokio::fs::File,
    temp: TempGuard,
    hasher: Sha256,
    size: u64,
    expected: Option<Digest>,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp", &self.temp.path())
            .field("size", &self.size)
            .field("expected", &self.expected)
            .finish()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.size
    }

    fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// Verifies the digest (the error names both digests), fsyncs and atomically renames the blob
    /// into place. If the blob already exists, the new copy is discarded (deduplication).
    pub async fn commit(mut self) -> Result<Digest, ContentError> {
        let temp = self.temp.path().to_owned();
        self.file.flush().await.map_err(io_err(&temp))?;
        let actual = Digest::from_hasher(self.hasher.clone());
        if let Some(expected) = &self.expected
            && expected != &actual
        {
            // `self.temp` removes the file on drop.
            return Err(ContentError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.file.sync_all().await.map_err(io_err(&temp))?;
        let store = self.store.clone();
        let digest = actual.clone();
        let temp_for_task = temp.clone();
        tokio::task::spawn_blocking(move || store.install(&temp_for_task, &digest))
            .await
            .map_err(|e| ContentError::Task(e.to_string()))??;
        self.temp.disarm();
        Ok(actual)
    }
}

impl AsyncWrite for BlobWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.file).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.size += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

/// Blocking counterpart of [`BlobWriter`], used inside `spawn_blocking` work (diffs).
pub(crate) struct SyncBlobWriter {
    store: ContentStore,
    file: std::io::BufWriter<std::fs::File>,
    temp: TempGuard,
    hasher: Sha256,
    size: u64,
}

impl SyncBlobWriter {
    pub(crate) fn commit(mut self) -> Result<(Digest, u64), ContentError> {
        let temp = self.temp.path().to_owned();
        self.file.flush().map_err(io_err(&temp))?;
        self.file.get_ref().sync_all().map_err(io_err(&temp))?;
        let digest = Digest::from_hasher(self.hasher.clone());
        self.store.install(&temp, &digest)?;
        self.temp.disarm();
        Ok((digest, self.size))
    }
}

impl std::io::Write for SyncBlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
