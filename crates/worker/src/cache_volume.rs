//! Persistent cache volumes ([`CacheVolumes`]): one directory each under `cache-volumes/`, held
//! by an exec as a [`CacheVolumeUse`] with the locking of the mount's sharing mode, and pruned
//! ([`CacheVolumes::prune`]) when no exec holds them.
//!
//! `cache-volumes/.used/<name>` is touched when a use of volume `<name>` begins and ends: its
//! modification time is the volume's last use (the volume's own directory is the user's and
//! keeps its times). A pruned volume is first renamed to `.pruned-<random>` while no exec can
//! take it, then removed; leftovers of an engine that died meanwhile go at the next start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dagr_solver::CacheSharing;

use crate::{Pruned, WorkerError, random_id};

/// Persistent cache volumes: one directory each, with the locking of their sharing mode.
#[derive(Default)]
pub struct CacheVolumes {
    root: PathBuf,
    locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// How many uses of each volume (by directory name) are running; a volume with uses is
    /// never pruned.
    held: Arc<parking_lot::Mutex<HashMap<String, usize>>>,
}

/// A cache volume held for one exec.
pub struct CacheVolumeUse {
    pub dir: PathBuf,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    _private: Option<PrivateDir>,
    _hold: Hold,
}

/// Name prefix of private cache volumes' extra copies.
const PRIVATE_PREFIX: &str = "private-";
/// Name prefix of volumes being removed.
const PRUNED_PREFIX: &str = ".pruned-";
/// The directory of last-use marks.
const USED_DIR: &str = ".used";

/// Whether `name` under the root is a volume (not a private copy, a mark or a removal).
fn is_volume(name: &str) -> bool {
    !name.starts_with(PRIVATE_PREFIX) && !name.starts_with('.')
}

/// Sets the last use of the volume whose mark is `mark` to now (a new mark is made now).
/// Blocking.
fn touch(mark: &Path) {
    if filetime::set_file_mtime(mark, filetime::FileTime::now()).is_err() {
        if let Some(dir) = mark.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::File::create(mark);
    }
}

/// One running use of a volume: counted while it lives, its end is the volume's last use.
struct Hold {
    held: Arc<parking_lot::Mutex<HashMap<String, usize>>>,
    name: String,
    mark: PathBuf,
}

impl Drop for Hold {
    /// Marks the last use, then ends the use (in that order: a prune by age that sees the use
    /// ended sees its mark too). On a blocking thread when a runtime runs.
    fn drop(&mut self) {
        let (held, name, mark) = (
            self.held.clone(),
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.mark),
        );
        let end = move || {
            touch(&mark);
            let mut held = held.lock();
            if let Some(count) = held.get_mut(&name) {
                *count -= 1;
                if *count == 0 {
                    held.remove(&name);
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(end)),
            Err(_) => end(),
        }
    }
}

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
            if !is_volume(&name) {
                continue;
            }
            // A volume pruned meanwhile is not counted.
            let size = match dagr_snapshot::disk_usage(&entry.path()) {
                Ok(usage) => usage.size,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push((name, size));
        }
        out.sort();
        Ok(out)
    }

    /// The cache volumes under `root` (existing). Blocking: removes the private copies and
    /// the half-removed volumes a previous engine left behind.
    pub(crate) fn open(root: PathBuf) -> Self {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(PRIVATE_PREFIX) || name.starts_with(PRUNED_PREFIX) {
                    let _ = std::fs::remove_dir_all(e.path());
                } else if is_volume(&name) {
                    // A volume of an engine that kept no marks: its age starts now.
                    let mark = root.join(USED_DIR).join(&name);
                    if !mark.exists() {
                        touch(&mark);
                    }
                }
            }
        }
        CacheVolumes {
            root,
            locks: parking_lot::Mutex::new(HashMap::new()),
            held: Arc::default(),
        }
    }

    fn name_of(id: &str) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(id.as_bytes()))
    }

    fn mark_of(&self, name: &str) -> PathBuf {
        self.root.join(USED_DIR).join(name)
    }

    /// Removes every volume no exec holds (with `unused_for`, only those whose last use is at
    /// least that old). Blocking.
    pub(crate) fn prune(&self, unused_for: Option<Duration>) -> Result<Pruned, WorkerError> {
        let mut pruned = Pruned::default();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pruned),
            Err(source) => {
                return Err(WorkerError::Open {
                    path: self.root.clone(),
                    source,
                });
            }
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(PRUNED_PREFIX) {
                // A removal that failed before: tried again.
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            if !is_volume(&name) {
                continue;
            }
            let mark = self.mark_of(&name);
            let removing = self.root.join(format!("{PRUNED_PREFIX}{}", random_id()));
            {
                // Under the lock no use can begin or end: one that begins after the rename
                // finds no volume and starts an empty one; one that ended marked its end.
                let held = self.held.lock();
                if held.contains_key(&name) {
                    continue;
                }
                if let Some(unused_for) = unused_for {
                    let last_use = std::fs::metadata(&mark)
                        .or_else(|_| entry.metadata())
                        .and_then(|m| m.modified());
                    let recent = last_use.map_or(true, |last_use| {
                        now.duration_since(last_use).unwrap_or_default() < unused_for
                    });
                    if recent {
                        continue;
                    }
                }
                if let Err(e) = std::fs::rename(entry.path(), &removing) {
                    tracing::warn!(volume = %name, error = %e, "pruning a cache volume");
                    continue;
                }
            }
            let size = dagr_snapshot::disk_usage(&removing).map_or(0, |u| u.size);
            if let Err(e) = std::fs::remove_dir_all(&removing) {
                // Counted as removed (no exec sees it again); the rest goes at the next prune.
                tracing::warn!(volume = %name, error = %e, "removing a pruned cache volume");
            }
            let _ = std::fs::remove_file(&mark);
            pruned.removed += 1;
            pruned.freed_bytes += size;
        }
        // Marks of volumes that are gone (a use that ended while its volume was removed).
        if let Ok(marks) = std::fs::read_dir(self.root.join(USED_DIR)) {
            for mark in marks.flatten() {
                let name = mark.file_name().to_string_lossy().into_owned();
                let held = self.held.lock();
                if !held.contains_key(&name) && !self.root.join(&name).exists() {
                    let _ = std::fs::remove_file(mark.path());
                }
            }
        }
        Ok(pruned)
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
        let name = Self::name_of(id);
        let dir = self.root.join(&name);
        *self.held.lock().entry(name.clone()).or_default() += 1;
        let mark = self.mark_of(&name);
        let hold = Hold {
            held: self.held.clone(),
            name,
            mark: mark.clone(),
        };
        let _ = tokio::task::spawn_blocking(move || touch(&mark)).await;
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
                _hold: hold,
            }),
            CacheSharing::Locked => {
                let guard = self.lock_of(id).lock_owned().await;
                Ok(CacheVolumeUse {
                    dir,
                    _lock: Some(guard),
                    _private: None,
                    _hold: hold,
                })
            }
            CacheSharing::Private => match self.lock_of(id).try_lock_owned() {
                Ok(guard) => Ok(CacheVolumeUse {
                    dir,
                    _lock: Some(guard),
                    _private: None,
                    _hold: hold,
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
                        _hold: hold,
                    })
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap

    use super::*;

    /// Waits until no use of volume `id` runs (a use ends on a blocking thread).
    async fn released(volumes: &CacheVolumes, id: &str) {
        let name = CacheVolumes::name_of(id);
        tokio::time::timeout(Duration::from_secs(10), async {
            while volumes.held.lock().contains_key(&name) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn prune_spares_held_and_recent_volumes_and_a_pruned_volume_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = CacheVolumes::open(dir.path().join("cache-volumes"));
        let held = volumes
            .acquire("go-mod", CacheSharing::Shared)
            .await
            .unwrap();
        std::fs::write(held.dir.join("module"), b"cached").unwrap();
        let idle = volumes.acquire("npm", CacheSharing::Locked).await.unwrap();
        std::fs::write(idle.dir.join("package"), b"cached").unwrap();
        drop(idle);
        released(&volumes, "npm").await;

        // Just used: kept by an age; held: kept by anything.
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(volumes.prune(hour).unwrap(), Pruned::default());
        let pruned = volumes.prune(None).unwrap();
        assert_eq!((pruned.removed, pruned.freed_bytes > 0), (1, true));
        assert!(held.dir.join("module").exists(), "a held volume stays");
        let again = volumes.acquire("npm", CacheSharing::Shared).await.unwrap();
        assert!(
            std::fs::read_dir(&again.dir).unwrap().next().is_none(),
            "a pruned volume starts empty"
        );
        drop((held, again));
        released(&volumes, "go-mod").await;
        released(&volumes, "npm").await;
        assert_eq!(volumes.prune(None).unwrap().removed, 2);
        let left: Vec<_> = std::fs::read_dir(volumes.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| is_volume(name))
            .collect();
        assert_eq!(left, Vec::<String>::new());
    }
}
