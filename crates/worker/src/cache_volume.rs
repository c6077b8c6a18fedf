//! Persistent cache volumes ([`CacheVolumes`]): one directory each under `cache-volumes/`, held
//! by an exec as a [`CacheVolumeUse`] with the locking of the mount's sharing mode.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use dagr_solver::CacheSharing;

use crate::{WorkerError, random_id};

/// Persistent cache volumes: one directory each, with the locking of their sharing mode.
#[derive(Default)]
pub struct CacheVolumes {
    root: PathBuf,
    locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A cache volume held for one exec.
pub struct CacheVolumeUse {
    pub dir: PathBuf,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    _private: Option<PrivateDir>,
}

/// Name prefix of private cache volumes' extra copies.
const PRIVATE_PREFIX: &str = "private-";

/// A throwaway directory removed on drop (a private cache volume's extra copy).
struct PrivateDir(PathBuf);

impl Drop for PrivateDir {
    /// The removal (of a whole cache's worth of files) runs on a blocking thread; copies left
    /// behind when the runtime shuts down first are removed by the next [`CacheVolumes::open`].
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.0);
        let remove = move || {
            let _ = std::fs::remove_dir_all(&dir);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

impl CacheVolumes {
    /// Where the volumes live.
    pub(crate) fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Each volume's name under `root` and the bytes it holds. Blocking.
    pub(crate) fn usage_of(root: &std::path::Path) -> std::io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(PRIVATE_PREFIX) {
                continue;
            }
            let size = dagr_snapshot::disk_usage(&entry.path())?.size;
            out.push((name, size));
        }
        out.sort();
        Ok(out)
    }

    /// The cache volumes under `root` (existing). Blocking: removes the private copies a
    /// previous engine left behind.
    pub(crate) fn open(root: PathBuf) -> Self {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(PRIVATE_PREFIX) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        CacheVolumes {
            root,
            locks: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn dir_of(&self, id: &str) -> PathBuf {
        use sha2::Digest as _;
        self.root
            .join(hex::encode(sha2::Sha256::digest(id.as_bytes())))
    }

    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(id.to_owned()).or_default().clone()
    }

    /// Takes volume `id` for one exec: `Shared` binds the volume as is, `Locked` waits until no
    /// other exec holds it, `Private` uses the volume when free and a fresh empty directory when not.
    pub async fn acquire(
        &self,
        id: &str,
        sharing: CacheSharing,
    ) -> Result<CacheVolumeUse, WorkerError> {
        let dir = self.dir_of(id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| WorkerError::Open {
                path: dir.clone(),
                source,
            })?;
        match sharing {
            CacheSharing::Shared => Ok(CacheVolumeUse {
                dir,
                _lock: None,
                _private: None,
            }),
            CacheSharing::Locked => {
                let guard = self.lock_of(id).lock_owned().await;
                Ok(CacheVolumeUse {
                    dir,
                    _lock: Some(guard),
                    _private: None,
                })
            }
            CacheSharing::Private => match self.lock_of(id).try_lock_owned() {
                Ok(guard) => Ok(CacheVolumeUse {
                    dir,
                    _lock: Some(guard),
                    _private: None,
                }),
                Err(_) => {
                    let extra = self.root.join(format!("{PRIVATE_PREFIX}{}", random_id()));
                    tokio::fs::create_dir_all(&extra).await.map_err(|source| {
                        WorkerError::Open {
                            path: extra.clone(),
                            source,
                        }
                    })?;
                    Ok(CacheVolumeUse {
                        dir: extra.clone(),
                        _lock: None,
                        _private: Some(PrivateDir(extra)),
                    })
                }
            },
        }
    }
}
