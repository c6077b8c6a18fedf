//! `Http` ops: a downloaded file, through [`dagr_source::HttpFetcher`]. Resolving downloads the
//! URL, or revalidates the last download of it (`ETag` / `Last-Modified`, as BuildKit does), and
//! the cache key follows the content's digest. Downloads are kept under the state directory's
//! `downloads/`: one record per URL (`<sha256 of the url>.json`) and the content by digest
//! (`blobs/<hex>`, with the server's modification time); a URL's previous version goes when a
//! new one arrives. A record's modification time is the URL's last download or revalidation:
//! [`Worker::prune_downloads`] removes records by it, then the content no record names. An op
//! whose content was pruned after its cache key was made downloads it again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dagr_solver::{HttpOp, RunCtx, RunOutput};
use dagr_source::{Fetched, Validators};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::mounts::Cleanup;
use crate::{KindUsage, Pruned, Worker, WorkerError, blocking, random_id};

/// What the worker remembers of a URL's last download.
#[derive(Debug, Serialize, Deserialize)]
struct DownloadRecord {
    url: String,
    digest: String,
    #[serde(default)]
    validators: Validators,
}

impl Worker {
    fn downloads_dir(&self) -> PathBuf {
        self.inner.work_dir.with_file_name("downloads")
    }

    fn download_blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.downloads_dir().join("blobs").join(hex)
    }

    /// Downloads or revalidates `op.url` for `session_id` (whose services it may name);
    /// returns the content's digest.
    pub(crate) async fn resolve_http(
        &self,
        op: &HttpOp,
        session_id: &str,
    ) -> Result<String, WorkerError> {
        let services = self
            .fetch_services("http", session_id, &op.service_hostnames)
            .await?;
        let dir = self.downloads_dir();
        let blobs = dir.join("blobs");
        tokio::fs::create_dir_all(&blobs)
            .await
            .map_err(|e| io_err(&blobs, e))?;
        let record_path = dir.join(format!("{}.json", hex::encode(Sha256::digest(&op.url))));
        let record: Option<DownloadRecord> = match tokio::fs::read(&record_path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            Err(_) => None,
        };
        // A record whose content is gone is no record.
        let record = match record {
            Some(r)
                if tokio::fs::try_exists(self.download_blob(&r.digest))
                    .await
                    .unwrap_or(false) =>
            {
                Some(r)
            }
            _ => None,
        };
        let temp = blobs.join(format!(".download-{}", random_id()));
        let fetched = self
            .inner
            .http
            .fetch_via(
                &op.url,
                record.as_ref().map(|r| &r.validators),
                &temp,
                &services.hosts,
            )
            .await;
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(WorkerError::Http(Box::new(e)));
            }
        };
        match (fetched, record) {
            (Fetched::NotModified, Some(record)) => {
                // Revalidated: a use, as far as pruning goes.
                let _ = blocking(move || {
                    filetime::set_file_mtime(&record_path, filetime::FileTime::now())
                        .map_err(|e| io_err(&record_path, e))
                })
                .await;
                Ok(record.digest)
            }
            (Fetched::NotModified, None) => Err(crate::op_err(
                "http",
                format!("{}: answered 304 Not Modified to a first download", op.url),
            )),
            (
                Fetched::Downloaded {
                    digest, validators, ..
                },
                previous,
            ) => {
                let blob = self.download_blob(&digest);
                tokio::fs::rename(&temp, &blob)
                    .await
                    .map_err(|e| io_err(&blob, e))?;
                let record = DownloadRecord {
                    url: op.url.clone(),
                    digest: digest.clone(),
                    validators,
                };
                let staged = record_path.with_extension(format!("json.{}", random_id()));
                let json = serde_json::to_vec(&record)
                    .map_err(|e| crate::op_err("http", e.to_string()))?;
                tokio::fs::write(&staged, json)
                    .await
                    .map_err(|e| io_err(&staged, e))?;
                tokio::fs::rename(&staged, &record_path)
                    .await
                    .map_err(|e| io_err(&record_path, e))?;
                if let Some(previous) = previous
                    && previous.digest != digest
                {
                    let _ = tokio::fs::remove_file(self.download_blob(&previous.digest)).await;
                }
                Ok(digest)
            }
        }
    }

    pub(crate) async fn run_http(
        &self,
        op: &HttpOp,
        ctx: &RunCtx,
    ) -> Result<RunOutput, WorkerError> {
        let digest = match ctx.resolved_digest() {
            Some(d) => d.to_owned(),
            None => self.resolve_http(op, ctx.session_id()).await?,
        };
        // Opened before it is copied: a prune that removes it meanwhile does not take the
        // content from under the copy.
        let content = match self.open_download(&digest).await? {
            Some(content) => content,
            None => {
                // Pruned since the cache key was made: downloaded again, it must be the same.
                let again = self.resolve_http(op, ctx.session_id()).await?;
                if again != digest {
                    return Err(crate::op_err(
                        "http",
                        format!(
                            "{}: the content changed ({digest}, now {again}) while the pipeline ran",
                            op.url
                        ),
                    ));
                }
                self.open_download(&digest).await?.ok_or_else(|| {
                    crate::op_err("http", format!("{}: the download went away", op.url))
                })?
            }
        };
        let blob = self.download_blob(&digest);
        let mut cleanup = Cleanup::new(self.clone());
        let empty = self.empty_snapshot().await?;
        let (key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&empty), "http")
            .await?;
        let (filename, mode, owner) = (op.filename.clone(), op.mode, op.owner);
        blocking(move || {
            let target = crate::fsops::resolve_in_root(&dir, &filename, false)?;
            let mut content = content;
            let mut file = std::fs::File::create(&target).map_err(|e| io_err(&target, e))?;
            std::io::copy(&mut content, &mut file).map_err(|e| io_err(&blob, e))?;
            drop(file);
            let modified = content.metadata().map_err(|e| io_err(&blob, e))?;
            if let Some(owner) = owner {
                std::os::unix::fs::lchown(&target, Some(owner.uid), Some(owner.gid))
                    .map_err(|e| io_err(&target, e))?;
            }
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io_err(&target, e))?;
            filetime::set_file_mtime(
                &target,
                filetime::FileTime::from_last_modification_time(&modified),
            )
            .map_err(|e| io_err(&target, e))?;
            Ok(())
        })
        .await?;
        self.commit_output(cleanup, key).await
    }

    /// The content of a download, opened; `None` when it is not (or no longer) kept.
    async fn open_download(&self, digest: &str) -> Result<Option<std::fs::File>, WorkerError> {
        let blob = self.download_blob(digest);
        blocking(move || match std::fs::File::open(&blob) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&blob, e)),
        })
        .await
    }

    /// The URLs whose downloads are kept, and the bytes of their content.
    pub(crate) async fn downloads_usage(&self) -> Result<KindUsage, WorkerError> {
        let dir = self.downloads_dir();
        blocking(move || {
            let bytes = blobs(&dir)?.iter().map(|(_, size)| size).sum();
            Ok(KindUsage {
                entries: records(&dir)?.len() as u64,
                bytes,
            })
        })
        .await
    }

    /// Removes the downloads of URLs not downloaded or revalidated within `unused_for` (all of
    /// them with `None`), and the content no remaining record names.
    pub async fn prune_downloads(
        &self,
        unused_for: Option<Duration>,
    ) -> Result<Pruned, WorkerError> {
        let dir = self.downloads_dir();
        blocking(move || {
            let now = SystemTime::now();
            let mut pruned = Pruned::default();
            let mut named = HashSet::new();
            for (path, modified) in records(&dir)? {
                let unused = unused_for.is_none_or(|unused_for| {
                    now.duration_since(modified).unwrap_or_default() >= unused_for
                });
                if unused {
                    match std::fs::remove_file(&path) {
                        Ok(()) => pruned.removed += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&path, e)),
                    }
                } else if let Ok(bytes) = std::fs::read(&path)
                    && let Ok(record) = serde_json::from_slice::<DownloadRecord>(&bytes)
                {
                    named.insert(record.digest);
                }
            }
            for (path, size) in blobs(&dir)? {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.is_some_and(|n| named.contains(&format!("sha256:{n}"))) {
                    continue;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => pruned.freed_bytes += size,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path, e)),
                }
            }
            Ok(pruned)
        })
        .await
    }
}

/// The entries of `dir`, none when it does not exist (yet). Blocking.
fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, WorkerError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<Result<_, _>>()
            .map_err(|e| io_err(dir, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(dir, e)),
    }
}

/// The records under `dir` (`<sha256 of the url>.json`) and their modification times. Blocking.
fn records(dir: &Path) -> Result<Vec<(PathBuf, SystemTime)>, WorkerError> {
    let mut out = Vec::new();
    for entry in entries(dir)? {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Ok(modified) = entry.metadata().and_then(|m| m.modified())
        {
            out.push((path, modified));
        }
    }
    Ok(out)
}

/// The content files under `dir/blobs` and their sizes, without downloads in progress
/// (`.download-*`). Blocking.
fn blobs(dir: &Path) -> Result<Vec<(PathBuf, u64)>, WorkerError> {
    let mut out = Vec::new();
    for entry in entries(&dir.join("blobs"))? {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if let Ok(meta) = entry.metadata() {
            out.push((entry.path(), meta.len()));
        }
    }
    Ok(out)
}

fn io_err(path: &Path, source: std::io::Error) -> WorkerError {
    WorkerError::Fs(crate::FsError::Io {
        path: path.display().to_string(),
        source,
    })
}
