//! Snapshots mounted for a run: read-only [`View`]s of results, writable work snapshots mounted
//! in `work/`, their commit into result snapshots, and the [`Cleanup`] that undoes a run's
//! partial work (mounts, active snapshots, work directories) when it fails or is cancelled.

use std::path::{Path, PathBuf};

use dagr_snapshot::MountGuard;
use dagr_solver::{ResultRef, RunOutput};

use crate::{Worker, WorkerError, blocking, op_err, random_id};

/// Name of the committed empty snapshot every `Empty` op returns.
const EMPTY_SNAPSHOT: &str = "empty";

/// The names of the snapshots runs commit (one per output; no other result shares them).
const RUN_SNAPSHOT_PREFIX: &str = "r-";

/// Whether `key` is a snapshot a run committed (not a shared one: an image layer's chain id or
/// the empty snapshot).
pub(crate) fn is_run_snapshot(key: &str) -> bool {
    key.starts_with(RUN_SNAPSHOT_PREFIX)
}

/// A read-only mount of a result.
pub struct View {
    path: PathBuf,
    cleanup: Cleanup,
}

impl View {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts and removes the view now.
    pub async fn release(mut self) {
        let _ = self.cleanup.unmount_all().await;
        for key in std::mem::take(&mut self.cleanup.snapshots) {
            let _ = self.cleanup.worker.inner.snapshots.remove(&key).await;
        }
    }
}

/// Undoes a run's partial work (mounts, active snapshots, work directories) unless disarmed.
pub(crate) struct Cleanup {
    worker: Worker,
    guards: Vec<MountGuard>,
    snapshots: Vec<String>,
    dirs: Vec<PathBuf>,
}

/// Blocking: unmounts `guards` innermost first (what cannot be unmounted is detached), then
/// removes the work directories `dirs`. The first unmount error is returned.
fn unmount_and_remove(guards: Vec<MountGuard>, dirs: Vec<PathBuf>) -> Result<(), WorkerError> {
    let unmounted = unmount(guards);
    remove_dirs(dirs);
    unmounted
}

/// Blocking: unmounts `guards` innermost first (what cannot be unmounted is detached). The
/// first error is returned.
fn unmount(mut guards: Vec<MountGuard>) -> Result<(), WorkerError> {
    let mut unmounted = Ok(());
    while let Some(g) = guards.pop() {
        if let Err(e) = g.unmount() {
            unmounted = Err(e.into());
            break;
        }
    }
    // Dropped guards unmount lazily if busy, innermost first.
    while let Some(g) = guards.pop() {
        drop(g);
    }
    unmounted
}

/// Blocking: removes the (empty, unmounted) work directories `dirs`.
fn remove_dirs(dirs: Vec<PathBuf>) {
    for d in dirs {
        let _ = std::fs::remove_dir(&d);
    }
}

impl Cleanup {
    pub(crate) fn new(worker: Worker) -> Self {
        Cleanup {
            worker,
            guards: Vec::new(),
            snapshots: Vec::new(),
            dirs: Vec::new(),
        }
    }

    async fn unmount_all(&mut self) -> Result<(), WorkerError> {
        let guards = std::mem::take(&mut self.guards);
        let dirs = std::mem::take(&mut self.dirs);
        blocking(move || unmount_and_remove(guards, dirs)).await
    }

    /// The run succeeded: what is left (if anything) was committed.
    fn disarm(&mut self) {
        self.snapshots.clear();
    }
}

impl Drop for Cleanup {
    /// Blocks no runtime thread: unmounting (which may wait on a busy mount) and the snapshot
    /// removal that must follow it run in a task.
    fn drop(&mut self) {
        let guards = std::mem::take(&mut self.guards);
        let dirs = std::mem::take(&mut self.dirs);
        let keys = std::mem::take(&mut self.snapshots);
        if guards.is_empty() && dirs.is_empty() && keys.is_empty() {
            return;
        }
        let snapshots = self.worker.inner.snapshots.clone();
        let remove = async move {
            for key in keys {
                if let Err(e) = snapshots.remove(&key).await {
                    tracing::warn!(snapshot = key, error = %e, "removing a snapshot of a failed run");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    // If the runtime shuts down first, the guards unmount as they are dropped.
                    if let Err(e) = blocking(move || unmount_and_remove(guards, dirs)).await {
                        tracing::warn!(error = %e, "unmounting the snapshots of a failed run");
                    }
                    remove.await;
                });
            }
            Err(_) => {
                let _ = unmount_and_remove(guards, dirs);
                futures::executor::block_on(remove);
            }
        }
    }
}

impl Worker {
    /// Mounts a committed snapshot read-only for reading; released by [`View::release`] (or, less
    /// promptly, on drop).
    pub async fn mount_view(&self, snapshot: &str) -> Result<View, WorkerError> {
        let key = format!("view-{}", random_id());
        let mut cleanup = Cleanup::new(self.clone());
        let mounts = self.inner.snapshots.view(&key, Some(snapshot)).await?;
        cleanup.snapshots.push(key.clone());
        let dir = self.inner.work_dir.join(&key);
        cleanup.dirs.push(dir.clone());
        // The copy backend's view may be a plain directory reported without mounts.
        let (path, mount) = if mounts.is_empty() {
            (self.inner.snapshots.root().join(&key), None)
        } else {
            (dir.clone(), Some(key))
        };
        let guard = self.work_dir(dir, mount).await?;
        cleanup.guards.extend(guard);
        Ok(View { path, cleanup })
    }

    /// A writable snapshot on `parent` mounted in a work directory.
    pub(crate) async fn prepare_mounted(
        &self,
        cleanup: &mut Cleanup,
        parent: Option<&str>,
        label: &str,
    ) -> Result<(String, PathBuf), WorkerError> {
        let key = format!("active-{label}-{}", random_id());
        self.inner.snapshots.prepare(&key, parent).await?;
        cleanup.snapshots.push(key.clone());
        let dir = self.inner.work_dir.join(&key);
        cleanup.dirs.push(dir.clone());
        let guard = self.work_dir(dir.clone(), Some(key.clone())).await?;
        cleanup.guards.extend(guard);
        Ok((key, dir))
    }

    /// Creates the work directory `dir` and mounts snapshot `mount` (if any) on it, on a
    /// blocking thread.
    async fn work_dir(
        &self,
        dir: PathBuf,
        mount: Option<String>,
    ) -> Result<Option<MountGuard>, WorkerError> {
        let snapshots = self.inner.snapshots.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|source| WorkerError::Open {
                path: dir.clone(),
                source,
            })?;
            match mount {
                Some(key) => Ok(Some(snapshots.mount(&key, &dir)?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// Unmounts everything `cleanup` holds, then commits each of `keys` as a new result
    /// snapshot, and disarms `cleanup`: returns the committed names, in order. The emptied
    /// mount points are removed in the background: an ext4 `rmdir` waits for the journal
    /// (0.1-1.2 ms measured beside the group commit's passes), and nothing needs them gone.
    pub(crate) async fn commit(
        &self,
        mut cleanup: Cleanup,
        keys: &[String],
    ) -> Result<Vec<String>, WorkerError> {
        let guards = std::mem::take(&mut cleanup.guards);
        let dirs = std::mem::take(&mut cleanup.dirs);
        let unmounted = blocking(move || unmount(guards)).await;
        drop(tokio::task::spawn_blocking(move || remove_dirs(dirs)));
        unmounted?;
        let mut names = Vec::new();
        for key in keys {
            let name = format!("{RUN_SNAPSHOT_PREFIX}{}", random_id());
            self.inner.snapshots.commit(&name, key).await?;
            cleanup.snapshots.retain(|k| k != key);
            names.push(name);
        }
        cleanup.disarm();
        Ok(names)
    }

    /// Commits `key`, the one output of a run, and returns it as the run's result.
    pub(crate) async fn commit_output(
        &self,
        cleanup: Cleanup,
        key: String,
    ) -> Result<RunOutput, WorkerError> {
        let name = self
            .commit(cleanup, &[key])
            .await?
            .pop()
            .ok_or_else(|| op_err("commit", "no snapshot committed"))?;
        Ok(RunOutput::new(ResultRef::new(
            name,
            serde_json::Value::Null,
        )))
    }

    /// The committed empty snapshot (created on first use).
    pub(crate) async fn empty_snapshot(&self) -> Result<String, WorkerError> {
        if self.inner.snapshots.stat(EMPTY_SNAPSHOT).is_ok() {
            return Ok(EMPTY_SNAPSHOT.to_owned());
        }
        let key = format!("active-empty-{}", random_id());
        self.inner.snapshots.prepare(&key, None).await?;
        match self.inner.snapshots.commit(EMPTY_SNAPSHOT, &key).await {
            Ok(()) => {}
            // Another run committed it first.
            Err(_) if self.inner.snapshots.stat(EMPTY_SNAPSHOT).is_ok() => {
                let _ = self.inner.snapshots.remove(&key).await;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(EMPTY_SNAPSHOT.to_owned())
    }
}
