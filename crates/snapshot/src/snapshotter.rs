//! [`Snapshotter`]: containerd's snapshotter shape over directories, with overlayfs when the kernel
//! allows it ([`Backend::Overlay`]) and a copying fallback ([`Backend::Copy`]).
//!
//! Layout under the root: `metadata.redb` (snapshot records and leases), `snapshots/<id>/fs`
//! (the snapshot's own tree: the overlay upper dir, or a full copy), `snapshots/<id>/work`
//! (overlay work dir of active snapshots), `mnt/<n>` (temporary mount points).
//!
//! Crash recovery, done by [`Snapshotter::open`]: anything still mounted under the root is
//! detached; active and view snapshots are removed (their owner was the dead process; only
//! committed snapshots outlive a process); directories without a record are removed. Every change
//! creates directories before its record is committed and deletes records before directories, so
//! a crash at any point leaves at worst an orphan directory, which the next open removes.
//!
//! The backend is recorded in the database: once committed snapshots exist, reopening with the
//! other backend is refused ([`SnapshotError::BackendMismatch`]) and auto-detection keeps it.
//! Only one process (and one `Snapshotter`) may open a root at a time; the database lock enforces
//! it before recovery touches anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil::{self, Usage};
use crate::group_commit::{GroupCommit, SyncStats};
use crate::mount::{LinuxMounts, Mount, MountError, MountGuard, MountKind, MountSyscalls};

/// Overlay options used when the kernel accepts them.
pub const OVERLAY_PINNED_OPTIONS: &[&str] = &["index=off", "redirect_dir=off", "metacopy=off"];

/// The overlay option of writable mounts that makes their unmount sync nothing, used when the
/// kernel accepts it (Linux 5.10 and later).
pub const OVERLAY_VOLATILE: &str = "volatile";

const SNAPSHOTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("snapshots");
const META: TableDefinition<'_, &str, &str> = TableDefinition::new("meta");
pub(crate) const COUNTERS: TableDefinition<'_, &str, u64> = TableDefinition::new("counters");
const LEASES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("leases");
/// Layer blob digest -> diff id, learned when unpacking.
pub(crate) const DIFF_IDS: TableDefinition<'_, &str, &str> = TableDefinition::new("layer_diff_ids");

/// Errors of the snapshotter and its leases.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot metadata database error: {0}")]
    Db(#[from] redb::Error),
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("parent {parent:?} of snapshot {key:?} is not a committed snapshot")]
    ParentNotCommitted { key: String, parent: String },
    #[error("snapshot {key:?} is {kind:?}, expected {expected}")]
    WrongKind {
        key: String,
        kind: Kind,
        expected: &'static str,
    },
    #[error("snapshot {key:?} still has children: {children:?}")]
    HasChildren { key: String, children: Vec<String> },
    #[error(
        "snapshot {key:?} would stack {layers} layers, more than overlayfs' {MAX_OVERLAY_LAYERS}"
    )]
    ChainTooLong { key: String, layers: usize },
    #[error("snapshot io error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot record {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("lease {0:?} not found")]
    LeaseNotFound(String),
    #[error("lease {0:?} already exists")]
    LeaseExists(String),
    #[error("{what} of {root} is still mounted after unmounting; refusing to delete under it")]
    StillMounted { what: PathBuf, root: PathBuf },
    #[error(
        "snapshots under {root} were made by the {stored:?} backend; {requested:?} cannot use them"
    )]
    BackendMismatch {
        root: PathBuf,
        stored: Backend,
        requested: Backend,
    },
    #[error("snapshotter background task failed: {0}")]
    Task(String),
    #[error(
        "the files of snapshots under {root} could not be synced ({source}); nothing committed since is kept after a restart"
    )]
    SyncFailed {
        root: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn db_err(e: impl Into<redb::Error>) -> SnapshotError {
    SnapshotError::Db(e.into())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The state of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Writable, from [`Snapshotter::prepare`].
    Active,
    /// Read-only, from [`Snapshotter::view`].
    View,
    /// Immutable; may be a parent.
    Committed,
}

/// How snapshots are stored and mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Each snapshot holds only its changes; mounts are overlayfs.
    Overlay,
    /// Each active snapshot starts as a full copy of its parent; mounts are binds.
    Copy,
}

/// Options for [`Snapshotter::open`].
#[derive(Debug, Clone, Default)]
pub struct SnapshotterOptions {
    /// `None`: overlay if a probe mount in the root works, else copy.
    pub backend: Option<Backend>,
}

/// What [`Snapshotter::stat`] and [`Snapshotter::list`] report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub key: String,
    pub kind: Kind,
    pub parent: Option<String>,
    pub created: SystemTime,
    /// Last time this snapshot was created, committed or used as a parent.
    pub last_used: SystemTime,
}

/// A lease: blobs and snapshots that garbage collection must keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: String,
    pub blobs: BTreeSet<Digest>,
    pub snapshots: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    pub(crate) parent: Option<String>,
    created_ms: u64,
    pub(crate) last_used_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ms_to_time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, SnapshotError> {
    serde_json::from_slice(bytes).map_err(|e| SnapshotError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) struct Inner {
    root: PathBuf,
    snapshots_dir: PathBuf,
    mnt_dir: PathBuf,
    /// Shared only so that [`Inner`]'s drop can leave it unclosed (see there).
    pub(crate) db: Arc<redb::Database>,
    backend: Backend,
    /// Extra options of writable overlay mounts (see [`OVERLAY_PINNED_OPTIONS`]).
    overlay_options: Vec<String>,
    sys: Arc<dyn MountSyscalls>,
    next_mount: AtomicU64,
    /// Serializes lease changes against garbage collection.
    pub(crate) gc_lock: parking_lot::Mutex<()>,
    /// Every write of the database goes through it (see [`crate::group_commit`]).
    pub(crate) commits: GroupCommit,
}

impl Drop for Inner {
    /// What is written becomes durable, files first, before the database closes (closing it
    /// commits durably). If that fails, the database is left unclosed: closing it would make
    /// records durable whose files may not be on disk; unclosed, the next open starts from the
    /// last sync and removes the directories it does not know.
    fn drop(&mut self) {
        if let Err(e) = self.commits.sync(&self.db) {
            tracing::error!(root = %self.root.display(), error = %e, "syncing the snapshots at close: what was committed since the last sync is dropped");
            std::mem::forget(Arc::clone(&self.db));
        }
    }
}

/// Snapshots of directory trees, shared by all sessions. Cheap to clone.
#[derive(Clone)]
pub struct Snapshotter {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("root", &self.inner.root)
            .field("backend", &self.inner.backend)
            .finish()
    }
}

impl Snapshotter {
    /// Opens (creating if needed) the snapshotter under `root`, recovers from a crash (see the
    /// module docs) and picks the backend. Blocking; call it at startup.
    pub fn open(root: &Path, options: SnapshotterOptions) -> Result<Self, SnapshotError> {
        Self::open_with(root, options, Arc::new(LinuxMounts))
    }

    /// [`Snapshotter::open`] with another mount implementation.
    pub fn open_with(
        root: &Path,
        options: SnapshotterOptions,
        sys: Arc<dyn MountSyscalls>,
    ) -> Result<Self, SnapshotError> {
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        let root = std::fs::canonicalize(root).map_err(io_err(root))?;
        let snapshots_dir = root.join("snapshots");
        let mnt_dir = root.join("mnt");
        for d in [&snapshots_dir, &mnt_dir] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        // The database lock also guarantees no live process uses this root.
        let db_path = root.join("metadata.redb");
        let db = redb::Database::create(&db_path).map_err(db_err)?;
        // 1. Nothing of a previous process stays mounted under the root.
        let mounted =
            crate::mount::mounts_under(&root).map_err(io_err(Path::new("/proc/self/mountinfo")))?;
        for m in &mounted {
            if let Err(e) = sys.unmount(m, true) {
                tracing::warn!(path = %m.display(), error = %e, "could not detach stale mount");
            }
        }
        let still =
            crate::mount::mounts_under(&root).map_err(io_err(Path::new("/proc/self/mountinfo")))?;
        if let Some(what) = still.into_iter().next() {
            return Err(SnapshotError::StillMounted { what, root });
        }
        remove_children(&mnt_dir)?;
        let probe_dir = root.join("probe");
        if probe_dir.exists() {
            std::fs::remove_dir_all(&probe_dir).map_err(io_err(&probe_dir))?;
        }

        // 2. Records: drop active and view snapshots of the dead process.
        let mut keep_ids = BTreeSet::new();
        let mut committed_ids = BTreeSet::new();
        {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut table = txn.open_table(SNAPSHOTS).map_err(db_err)?;
                txn.open_table(COUNTERS).map_err(db_err)?;
                txn.open_table(LEASES).map_err(db_err)?;
                txn.open_table(DIFF_IDS).map_err(db_err)?;
                txn.open_table(META).map_err(db_err)?;
                let mut stale = Vec::new();
                for item in table.iter().map_err(db_err)? {
                    let (k, v) = item.map_err(db_err)?;
                    let key = k.value().to_owned();
                    let record: Record = decode(&key, v.value())?;
                    if record.kind == Kind::Committed {
                        keep_ids.insert(record.id);
                        committed_ids.insert(record.id);
                    } else {
                        stale.push(key);
                    }
                }
                for key in stale {
                    tracing::info!(key, "removing snapshot left active by a previous process");
                    table.remove(key.as_str()).map_err(db_err)?;
                }
            }
            txn.commit().map_err(db_err)?;
        }
        // 3. Directories without a record, and work dirs of committed snapshots.
        for entry in std::fs::read_dir(&snapshots_dir).map_err(io_err(&snapshots_dir))? {
            let entry = entry.map_err(io_err(&snapshots_dir))?;
            let path = entry.path();
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            match id {
                Some(id) if keep_ids.contains(&id) => {
                    let work = path.join("work");
                    if committed_ids.contains(&id) && work.exists() {
                        std::fs::remove_dir_all(&work).map_err(io_err(&work))?;
                    }
                }
                _ => {
                    tracing::info!(path = %path.display(), "removing orphan snapshot directory");
                    std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
                }
            }
        }

        // Pin overlay features that would put state outside the upper dir (redirects, metacopy,
        // inode index) off where the kernel knows them, so a snapshot's dir is its whole diff.
        let pinned: Vec<String> = OVERLAY_PINNED_OPTIONS
            .iter()
            .map(|o| (*o).to_owned())
            .collect();
        let stored = stored_backend(&db)?;
        let requested = match (stored, committed_ids.is_empty(), options.backend) {
            // Existing snapshots were made by one backend; the other cannot read them.
            (Some(stored), false, Some(asked)) if asked != stored => {
                return Err(SnapshotError::BackendMismatch {
                    root,
                    stored,
                    requested: asked,
                });
            }
            (Some(stored), false, _) => Some(stored),
            (_, _, asked) => asked,
        };
        let (backend, overlay_options) = match requested {
            Some(Backend::Copy) => (Backend::Copy, Vec::new()),
            Some(Backend::Overlay) => {
                let extra = if probe_overlay(&probe_dir, &*sys, &pinned) {
                    pinned
                } else {
                    Vec::new()
                };
                (Backend::Overlay, extra)
            }
            None => {
                if probe_overlay(&probe_dir, &*sys, &pinned) {
                    (Backend::Overlay, pinned)
                } else if probe_overlay(&probe_dir, &*sys, &[]) {
                    (Backend::Overlay, Vec::new())
                } else {
                    (Backend::Copy, Vec::new())
                }
            }
        };
        // A volatile overlay syncs nothing when it is unmounted: the group commit syncs files
        // (see `crate::group_commit`).
        let mut overlay_options = overlay_options;
        if backend == Backend::Overlay {
            let mut volatile = overlay_options.clone();
            volatile.push(OVERLAY_VOLATILE.to_owned());
            if probe_overlay(&probe_dir, &*sys, &volatile) {
                overlay_options = volatile;
            }
        }
        if stored != Some(backend) {
            store_backend(&db, backend)?;
        }
        let commits = GroupCommit::open(&root)?;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                snapshots_dir,
                mnt_dir,
                db: Arc::new(db),
                backend,
                overlay_options,
                sys,
                next_mount: AtomicU64::new(0),
                gc_lock: parking_lot::Mutex::new(()),
                commits,
            }),
        })
    }

    /// Makes every change so far durable: the files of committed snapshots reach the disk
    /// (`syncfs`), then their records (one durable commit). Until then a crash loses them and
    /// the next open removes their directories. Blocking. Returns whether there was anything to
    /// sync. A sync task calls it after [`Snapshotter::wait_unsynced`]; closing the snapshotter
    /// syncs too.
    pub fn sync(&self) -> Result<bool, SnapshotError> {
        self.inner.commits.sync(&self.inner.db)
    }

    /// Resolves once a snapshot with files was committed since the last sync.
    pub async fn wait_unsynced(&self) {
        self.inner.commits.wait_data().await;
    }

    /// Syncs done, their time, and whether changes wait for the next one.
    pub fn sync_stats(&self) -> SyncStats {
        self.inner.commits.stats()
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The (canonical) root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, SnapshotError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, SnapshotError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| SnapshotError::Task(e.to_string()))?
    }

    /// Creates a writable snapshot `key` on top of the committed `parent` and returns how to mount it.
    pub async fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let (key, parent) = (key.to_owned(), parent.map(str::to_owned));
        self.blocking(move |inner| inner.create(&key, parent.as_deref(), Kind::Active))
            .await
    }

    /// Creates a read-only snapshot `key` of the committed `parent` and returns how to mount it.
    pub async fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, SnapshotError> {
        let (key, parent) = (key.to_owned(), parent.map(str::to_owned));
        self.blocking(move |inner| inner.create(&key, parent.as_deref(), Kind::View))
            .await
    }

    /// How to mount the active or view snapshot `key`.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let record = self.inner.record(key)?;
        self.inner.mounts_of(key, &record)
    }

    /// Mounts the active or view snapshot `key` on `target`; unmounted when the guard drops.
    pub fn mount(&self, key: &str, target: &Path) -> Result<MountGuard, SnapshotError> {
        let mounts = self.mounts(key)?;
        Ok(crate::mount::mount_all(
            &mounts,
            target,
            self.inner.sys.clone(),
        )?)
    }

    /// Commits the active snapshot `key` as the immutable snapshot `name`. It must not be mounted.
    pub async fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError> {
        let (name, key) = (name.to_owned(), key.to_owned());
        self.blocking(move |inner| inner.commit(&name, &key)).await
    }

    /// Removes snapshot `key` (any kind); refused while other snapshots have it as parent.
    pub async fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.remove(&key, false).map(|_| ()))
            .await
    }

    /// Metadata of snapshot `key`.
    pub fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        let record = self.inner.record(key)?;
        Ok(info(key, &record))
    }

    /// All snapshots, by key.
    pub fn list(&self) -> Result<Vec<Info>, SnapshotError> {
        Ok(self
            .inner
            .records()?
            .iter()
            .map(|(k, r)| info(k, r))
            .collect())
    }

    /// Disk usage of the snapshot's own directory (for overlay, only its changes).
    pub async fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let key = key.to_owned();
        self.blocking(move |inner| {
            let record = inner.record(&key)?;
            let dir = inner.fs_dir(record.id);
            fsutil::disk_usage(&dir).map_err(io_err(&dir))
        })
        .await
    }

    /// Creates an empty lease.
    pub async fn create_lease(&self, id: &str) -> Result<(), SnapshotError> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            let _gc = inner.gc_lock.lock();
            inner.commits.records(&inner.db, |txn| {
                let mut table = txn.open_table(LEASES).map_err(db_err)?;
                if table.get(id.as_str()).map_err(db_err)?.is_some() {
                    return Err(SnapshotError::LeaseExists(id));
                }
                let lease = Lease {
                    id: id.clone(),
                    ..Lease::default()
                };
                table
                    .insert(id.as_str(), encode(&lease).as_slice())
                    .map_err(db_err)?;
                Ok(())
            })
        })
        .await
    }

    /// Adds a blob to lease `id` (the blob need not exist yet: lease before writing).
    pub async fn lease_blob(&self, id: &str, digest: &Digest) -> Result<(), SnapshotError> {
        let digest = digest.clone();
        self.update_lease(id, move |l| {
            l.blobs.insert(digest);
        })
        .await
    }

    /// Adds a snapshot key to lease `id`.
    pub async fn lease_snapshot(&self, id: &str, key: &str) -> Result<(), SnapshotError> {
        let key = key.to_owned();
        self.update_lease(id, move |l| {
            l.snapshots.insert(key);
        })
        .await
    }

    async fn update_lease(
        &self,
        id: &str,
        f: impl FnOnce(&mut Lease) + Send + 'static,
    ) -> Result<(), SnapshotError> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            let _gc = inner.gc_lock.lock();
            inner.commits.records(&inner.db, |txn| {
                let mut table = txn.open_table(LEASES).map_err(db_err)?;
                let mut lease: Lease = match table.get(id.as_str()).map_err(db_err)? {
                    Some(v) => decode(&id, v.value())?,
                    None => return Err(SnapshotError::LeaseNotFound(id)),
                };
                f(&mut lease);
                table
                    .insert(id.as_str(), encode(&lease).as_slice())
                    .map_err(db_err)?;
                Ok(())
            })
        })
        .await
    }

    /// Makes lease `id` hold exactly the snapshots `keys` (created if missing), in one
    /// transaction.
    pub async fn set_lease_snapshots(
        &self,
        id: &str,
        keys: Vec<String>,
    ) -> Result<(), SnapshotError> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            let _gc = inner.gc_lock.lock();
            inner.commits.records(&inner.db, |txn| {
                let mut table = txn.open_table(LEASES).map_err(db_err)?;
                let lease = Lease {
                    id: id.clone(),
                    blobs: BTreeSet::new(),
                    snapshots: keys.into_iter().collect(),
                };
                table
                    .insert(id.as_str(), encode(&lease).as_slice())
                    .map_err(db_err)?;
                Ok(())
            })
        })
        .await
    }

    /// Blocking (for start-up): deletes every lease whose id starts with `prefix` (leases a
    /// previous engine process held in memory); returns how many.
    pub fn delete_leases_with_prefix(&self, prefix: &str) -> Result<usize, SnapshotError> {
        let inner = &self.inner;
        let _gc = inner.gc_lock.lock();
        inner.commits.records(&inner.db, |txn| {
            let mut table = txn.open_table(LEASES).map_err(db_err)?;
            let ids: Vec<String> = table
                .iter()
                .map_err(db_err)?
                .filter_map(|item| item.ok().map(|(k, _)| k.value().to_owned()))
                .filter(|id| id.starts_with(prefix))
                .collect();
            for id in &ids {
                table.remove(id.as_str()).map_err(db_err)?;
            }
            Ok(ids.len())
        })
    }

    /// Deletes lease `id`; what it held becomes collectable.
    pub async fn delete_lease(&self, id: &str) -> Result<(), SnapshotError> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            let _gc = inner.gc_lock.lock();
            inner.commits.records(&inner.db, |txn| {
                let mut table = txn.open_table(LEASES).map_err(db_err)?;
                if table.remove(id.as_str()).map_err(db_err)?.is_none() {
                    return Err(SnapshotError::LeaseNotFound(id));
                }
                Ok(())
            })
        })
        .await
    }

    /// All leases.
    pub fn leases(&self) -> Result<Vec<Lease>, SnapshotError> {
        self.inner.leases()
    }
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Overlay => "overlay",
        Backend::Copy => "copy",
    }
}

fn stored_backend(db: &redb::Database) -> Result<Option<Backend>, SnapshotError> {
    let txn = db.begin_read().map_err(db_err)?;
    let table = txn.open_table(META).map_err(db_err)?;
    let value = table.get("backend").map_err(db_err)?;
    Ok(match value.as_ref().map(|v| v.value()) {
        Some("overlay") => Some(Backend::Overlay),
        Some("copy") => Some(Backend::Copy),
        _ => None,
    })
}

fn store_backend(db: &redb::Database, backend: Backend) -> Result<(), SnapshotError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut table = txn.open_table(META).map_err(db_err)?;
        table
            .insert("backend", backend_name(backend))
            .map_err(db_err)?;
    }
    txn.commit().map_err(db_err)
}

fn info(key: &str, r: &Record) -> Info {
    Info {
        key: key.to_owned(),
        kind: r.kind,
        parent: r.parent.clone(),
        created: ms_to_time(r.created_ms),
        last_used: ms_to_time(r.last_used_ms),
    }
}

fn remove_children(dir: &Path) -> Result<(), SnapshotError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io_err(&path))?;
    }
    Ok(())
}

/// Tries a tiny overlay mount; true if the kernel and filesystem allow it.
fn probe_overlay(dir: &Path, sys: &dyn MountSyscalls, extra: &[String]) -> bool {
    let attempt = || -> std::io::Result<bool> {
        for d in ["l1", "l2", "u", "w", "m"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        std::fs::write(dir.join("l2/f"), b"probe")?;
        let mut data = format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            dir.join("l1").display(),
            dir.join("l2").display(),
            dir.join("u").display(),
            dir.join("w").display()
        );
        for o in extra {
            data.push(',');
            data.push_str(o);
        }
        let target = dir.join("m");
        if let Err(e) = sys.mount_overlay(&target, &data, false) {
            tracing::info!(error = %e, "overlayfs unavailable, using the copy backend");
            return Ok(false);
        }
        let works = std::fs::read(target.join("f"))
            .map(|b| b == b"probe")
            .unwrap_or(false)
            && std::fs::write(target.join("g"), b"x").is_ok();
        sys.unmount(&target, false)
            .or_else(|_| sys.unmount(&target, true))?;
        Ok(works)
    };
    let ok = attempt().unwrap_or(false);
    let _ = std::fs::remove_dir_all(dir);
    ok
}

impl Inner {
    /// A unique name for temporary keys and directories of this process.
    pub(crate) fn temp_name(&self) -> String {
        let n = self.next_mount.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", std::process::id())
    }

    /// Allocates a fresh, empty temporary mount point under the root.
    pub(crate) fn temp_mount_dir(&self) -> Result<PathBuf, SnapshotError> {
        let dir = self.mnt_dir.join(self.temp_name());
        std::fs::create_dir(&dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    pub(crate) fn remember_diff_id(
        &self,
        layer: &Digest,
        diff_id: &Digest,
    ) -> Result<(), SnapshotError> {
        self.commits.records(&self.db, |txn| {
            let mut table = txn.open_table(DIFF_IDS).map_err(db_err)?;
            table
                .insert(layer.to_string().as_str(), diff_id.to_string().as_str())
                .map_err(db_err)?;
            Ok(())
        })
    }

    pub(crate) fn sys(&self) -> Arc<dyn MountSyscalls> {
        self.sys.clone()
    }

    fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.snapshots_dir.join(id.to_string())
    }

    pub(crate) fn fs_dir(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id).join("fs")
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn record(&self, key: &str) -> Result<Record, SnapshotError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(db_err)?;
        match table.get(key).map_err(db_err)? {
            Some(v) => decode(key, v.value()),
            None => Err(SnapshotError::NotFound(key.to_owned())),
        }
    }

    pub(crate) fn records(&self) -> Result<Vec<(String, Record)>, SnapshotError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let key = k.value().to_owned();
            let record = decode(&key, v.value())?;
            out.push((key, record));
        }
        Ok(out)
    }

    pub(crate) fn leases(&self) -> Result<Vec<Lease>, SnapshotError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(LEASES).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Own dirs of the parent chain, nearest first.
    fn chain_dirs(&self, parent: Option<&str>) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut dirs = Vec::new();
        let mut next = parent.map(str::to_owned);
        while let Some(key) = next {
            let r = self.record(&key)?;
            dirs.push(self.fs_dir(r.id));
            next = r.parent;
        }
        Ok(dirs)
    }

    pub(crate) fn mounts_of(
        &self,
        key: &str,
        record: &Record,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let own = self.fs_dir(record.id);
        let bind = |source: PathBuf, ro: bool| Mount {
            kind: MountKind::Bind,
            source,
            options: vec![if ro { "ro" } else { "rw" }.to_owned(), "rbind".to_owned()],
        };
        match (record.kind, self.backend) {
            (Kind::Committed, _) => Err(SnapshotError::WrongKind {
                key: key.to_owned(),
                kind: Kind::Committed,
                expected: "active or view (use a view to mount a committed snapshot)",
            }),
            (Kind::Active, Backend::Copy) => Ok(vec![bind(own, false)]),
            (Kind::View, Backend::Copy) => {
                let lower = self.chain_dirs(record.parent.as_deref())?;
                Ok(vec![bind(lower.into_iter().next().unwrap_or(own), true)])
            }
            (Kind::Active, Backend::Overlay) => {
                let lower = self.chain_dirs(record.parent.as_deref())?;
                if lower.is_empty() {
                    return Ok(vec![bind(own, false)]);
                }
                let mut options = vec![
                    format!("lowerdir={}", join_lower(&lower)),
                    format!("upperdir={}", own.display()),
                    format!(
                        "workdir={}",
                        self.snapshot_dir(record.id).join("work").display()
                    ),
                ];
                options.extend(self.overlay_options.iter().cloned());
                check_depth(key, &lower)?;
                Ok(vec![Mount {
                    kind: MountKind::Overlay,
                    source: "overlay".into(),
                    options,
                }])
            }
            (Kind::View, Backend::Overlay) => {
                let mut lower = self.chain_dirs(record.parent.as_deref())?;
                match lower.len() {
                    0 => Ok(vec![bind(own, true)]),
                    1 => Ok(vec![bind(lower.remove(0), true)]),
                    _ => {
                        let options = vec![format!("lowerdir={}", join_lower(&lower))];
                        check_depth(key, &lower)?;
                        Ok(vec![Mount {
                            kind: MountKind::Overlay,
                            source: "overlay".into(),
                            options,
                        }])
                    }
                }
            }
        }
    }

    /// The next snapshot id. Durable with the next sync; an id reused after a crash is safe
    /// because recovery removes the directories of snapshots the database does not know before
    /// anything new is created.
    fn next_id(&self) -> Result<u64, SnapshotError> {
        self.commits.records(&self.db, |txn| {
            let mut table = txn.open_table(COUNTERS).map_err(db_err)?;
            let id = table
                .get("next_snapshot_id")
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(1);
            table.insert("next_snapshot_id", id + 1).map_err(db_err)?;
            Ok(id)
        })
    }

    fn check_parent(&self, key: &str, parent: Option<&str>) -> Result<(), SnapshotError> {
        if let Some(p) = parent {
            match self.record(p) {
                Ok(r) if r.kind == Kind::Committed => {}
                Ok(_) | Err(SnapshotError::NotFound(_)) => {
                    return Err(SnapshotError::ParentNotCommitted {
                        key: key.to_owned(),
                        parent: p.to_owned(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(crate) fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
    ) -> Result<Vec<Mount>, SnapshotError> {
        match self.record(key) {
            Ok(_) => return Err(SnapshotError::AlreadyExists(key.to_owned())),
            Err(SnapshotError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.check_parent(key, parent)?;
        let id = self.next_id()?;
        let dir = self.snapshot_dir(id);
        let result = self.create_dirs_and_record(key, parent, kind, id);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let record = result?;
        self.mounts_of(key, &record)
    }

    fn create_dirs_and_record(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        id: u64,
    ) -> Result<Record, SnapshotError> {
        let dir = self.snapshot_dir(id);
        let fs = dir.join("fs");
        std::fs::create_dir_all(&fs).map_err(io_err(&fs))?;
        std::fs::set_permissions(&fs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io_err(&fs))?;
        match self.backend {
            Backend::Overlay if kind == Kind::Active && parent.is_some() => {
                let work = dir.join("work");
                std::fs::create_dir(&work).map_err(io_err(&work))?;
                // Overlayfs shows the upper directory's own attributes for the root of the
                // merged tree: start it as a copy of the parent's root (mode, owner, times).
                if let Some(parent_fs) = self.chain_dirs(parent)?.into_iter().next() {
                    let md = std::fs::metadata(&parent_fs).map_err(io_err(&parent_fs))?;
                    fsutil::copy_meta(&fs, &md, Some(&parent_fs)).map_err(io_err(&fs))?;
                }
            }
            Backend::Copy if kind == Kind::Active => {
                if let Some(parent_dir) = self.chain_dirs(parent)?.into_iter().next() {
                    fsutil::copy_tree(&parent_dir, &fs)
                        .map_err(|(path, source)| SnapshotError::Io { path, source })?;
                }
            }
            _ => {}
        }
        let now = now_ms();
        let record = Record {
            id,
            kind,
            parent: parent.map(str::to_owned),
            created_ms: now,
            last_used_ms: now,
        };
        // Active and view snapshots do not survive a crash anyway (recovery removes them and
        // their directories): their records are records only. A committed one brings files.
        let write = |txn: &redb::WriteTransaction| {
            let mut table = txn.open_table(SNAPSHOTS).map_err(db_err)?;
            if table.get(key).map_err(db_err)?.is_some() {
                return Err(SnapshotError::AlreadyExists(key.to_owned()));
            }
            if let Some(p) = parent {
                let mut pr: Record = match table.get(p).map_err(db_err)? {
                    Some(v) => decode(p, v.value())?,
                    None => {
                        return Err(SnapshotError::ParentNotCommitted {
                            key: key.to_owned(),
                            parent: p.to_owned(),
                        });
                    }
                };
                pr.last_used_ms = now;
                table.insert(p, encode(&pr).as_slice()).map_err(db_err)?;
            }
            table
                .insert(key, encode(&record).as_slice())
                .map_err(db_err)?;
            Ok(())
        };
        if kind == Kind::Committed {
            self.commits.data(&self.db, key, write)?;
        } else {
            self.commits.records(&self.db, write)?;
        }
        Ok(record)
    }

    /// Commits the active `key` as `name`: its files are synced by the next sync, before its
    /// record is durable.
    pub(crate) fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError> {
        let id = self.commits.data(&self.db, name, |txn| {
            let mut table = txn.open_table(SNAPSHOTS).map_err(db_err)?;
            let mut record: Record = match table.get(key).map_err(db_err)? {
                Some(v) => decode(key, v.value())?,
                None => return Err(SnapshotError::NotFound(key.to_owned())),
            };
            if record.kind != Kind::Active {
                return Err(SnapshotError::WrongKind {
                    key: key.to_owned(),
                    kind: record.kind,
                    expected: "active",
                });
            }
            if table.get(name).map_err(db_err)?.is_some() {
                return Err(SnapshotError::AlreadyExists(name.to_owned()));
            }
            record.kind = Kind::Committed;
            record.created_ms = now_ms();
            record.last_used_ms = record.created_ms;
            table.remove(key).map_err(db_err)?;
            table
                .insert(name, encode(&record).as_slice())
                .map_err(db_err)?;
            Ok(record.id)
        })?;
        // The overlay's work dir: no mount uses it again (a crash leaves it to the next open).
        self.commits
            .remove_later(self.snapshot_dir(id).join("work"));
        Ok(())
    }

    /// Removes `key`. With `unleased_only`, refuses (returns false) if a lease holds it.
    ///
    /// A committed snapshot's removal is durable before its directory goes (a crash never
    /// leaves a record of a half-deleted tree), unless no durable record named it yet; an
    /// active or view snapshot's is not (recovery removes those anyway).
    pub(crate) fn remove(&self, key: &str, unleased_only: bool) -> Result<bool, SnapshotError> {
        let durable = self.record(key)?.kind == Kind::Committed;
        let write = |txn: &redb::WriteTransaction| {
            let mut table = txn.open_table(SNAPSHOTS).map_err(db_err)?;
            let record: Record = match table.get(key).map_err(db_err)? {
                Some(v) => decode(key, v.value())?,
                None => return Err(SnapshotError::NotFound(key.to_owned())),
            };
            let mut children = Vec::new();
            for item in table.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let r: Record = decode(k.value(), v.value())?;
                if r.parent.as_deref() == Some(key) {
                    children.push(k.value().to_owned());
                }
            }
            if !children.is_empty() {
                return Err(SnapshotError::HasChildren {
                    key: key.to_owned(),
                    children,
                });
            }
            if unleased_only {
                let leases = txn.open_table(LEASES).map_err(db_err)?;
                for item in leases.iter().map_err(db_err)? {
                    let (k, v) = item.map_err(db_err)?;
                    let lease: Lease = decode(k.value(), v.value())?;
                    if lease.snapshots.contains(key) {
                        return Ok(None);
                    }
                }
            }
            if (record.kind == Kind::Committed) != durable {
                // Replaced meanwhile by a snapshot of the other kind: not the one asked for.
                return Err(SnapshotError::NotFound(key.to_owned()));
            }
            table.remove(key).map_err(db_err)?;
            Ok(Some(record.id))
        };
        let removed = if durable {
            self.commits.remove_committed(&self.db, key, write)?
        } else {
            self.commits.records(&self.db, write)?
        };
        let Some(id) = removed else {
            return Ok(false);
        };
        let dir = self.snapshot_dir(id);
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(true)
    }
}

fn join_lower(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Most lower layers one overlay mount may stack (the kernel's `OVL_MAX_STACK`).
pub const MAX_OVERLAY_LAYERS: usize = 500;

fn check_depth(key: &str, lower: &[PathBuf]) -> Result<(), SnapshotError> {
    if lower.len() > MAX_OVERLAY_LAYERS {
        return Err(SnapshotError::ChainTooLong {
            key: key.to_owned(),
            layers: lower.len(),
        });
    }
    Ok(())
}

/// Parent key -> keys of its children.
pub(crate) fn record_parent_map(records: &[(String, Record)]) -> BTreeMap<String, Vec<String>> {
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, r) in records {
        if let Some(p) = &r.parent {
            children.entry(p.clone()).or_default().push(k.clone());
        }
    }
    children
}
