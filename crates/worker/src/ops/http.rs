//! `Http` ops: a downloaded file, through [`dagr_source::HttpFetcher`]. Resolving downloads the
//! URL, or revalidates the last download of it (`ETag` / `Last-Modified`, as BuildKit does), and
//! the cache key follows the content's digest. Downloads are kept under the state directory's
//! `downloads/`: one record per URL (`<sha256 of the url>.json`) and the content by digest
//! (`blobs/<hex>`, with the server's modification time); a URL's previous version goes when a
//! new one arrives.

use std::path::{Path, PathBuf};

use dagr_solver::{HttpOp, RunCtx, RunOutput};
use dagr_source::{Fetched, Validators};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::mounts::Cleanup;
use crate::{Worker, WorkerError, blocking, random_id};

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
            (Fetched::NotModified, Some(record)) => Ok(record.digest),
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
        let blob = self.download_blob(&digest);
        let mut cleanup = Cleanup::new(self.clone());
        let empty = self.empty_snapshot().await?;
        let (key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&empty), "http")
            .await?;
        let (filename, mode, owner) = (op.filename.clone(), op.mode, op.owner);
        blocking(move || {
            let target = crate::fsops::resolve_in_root(&dir, &filename, false)?;
            std::fs::copy(&blob, &target).map_err(|e| io_err(&blob, e))?;
            let modified = std::fs::metadata(&blob).map_err(|e| io_err(&blob, e))?;
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
}

fn io_err(path: &Path, source: std::io::Error) -> WorkerError {
    WorkerError::Fs(crate::FsError::Io {
        path: path.display().to_string(),
        source,
    })
}
