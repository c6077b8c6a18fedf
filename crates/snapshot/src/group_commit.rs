//! [`GroupCommit`]: how the snapshotter's changes reach the disk.
//!
//! Writable overlays are mounted `volatile` where the kernel allows it, so unmounting one syncs
//! nothing and a committed snapshot's files may still be only in the page cache when its record
//! is written. Records are therefore written without an fsync ([`redb::Durability::None`]) and
//! made durable in batches by [`GroupCommit::sync`]: a `syncfs` of the snapshotter's filesystem,
//! then one durable commit that covers every record written before it.
//!
//! Invariant: a durable record never names a snapshot whose files are not on disk. It holds
//! because every write that brings files (a commit: [`GroupCommit::data`]) runs under the read
//! side of a gate, and the only durable commits ([`GroupCommit::sync`],
//! [`GroupCommit::durable`]) run under its write side, after a `syncfs` when files came since
//! the last one. Writes without files of their own (ids, active and view records, leases, layer
//! diff ids: [`GroupCommit::records`]) are ungated: whenever a durable commit takes them along,
//! they are correct. What a crash loses is what came after the last sync: the database then
//! opens as of that sync, and [`crate::Snapshotter::open`] removes the directories it does not
//! know.
//!
//! Two things keep commits from waiting on the disk: a durable commit runs one `syncfs` before
//! it closes the gate (the gate then waits only for files that came meanwhile, usually none, and
//! the commit itself), and a snapshot removed before any durable commit took its record along
//! ([`GroupCommit::remove_committed`]: an upload found unchanged and dropped at once) is removed
//! lazily, as nothing durable names it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use redb::{ReadableTable as _, WriteTransaction};

use crate::snapshotter::{COUNTERS, SnapshotError, db_err};

/// What is written but not yet durable, in increasing order of what a sync must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Pending {
    Nothing = 0,
    /// Records only: a durable commit makes them durable.
    Records = 1,
    /// Records of snapshots with files: `syncfs` first.
    Data = 2,
}

impl Pending {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Pending::Nothing,
            1 => Pending::Records,
            _ => Pending::Data,
        }
    }
}

/// Sync counts and time, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Syncs that made something durable.
    pub syncs: u64,
    /// Their wall time (the `syncfs` and the durable commit), summed.
    pub time: std::time::Duration,
    /// Whether snapshots with files were committed since the last sync.
    pub commits_pending: bool,
}

/// The snapshotter's write paths and its sync; see the module docs.
pub(crate) struct GroupCommit {
    /// Read side: writes that bring files. Write side: durable commits.
    gate: RwLock<()>,
    /// A [`Pending`], raised by writes and taken by durable commits.
    pending: AtomicU8,
    /// The snapshotter's root directory, for `syncfs`.
    root: std::fs::File,
    root_path: PathBuf,
    /// Woken when files were committed and wait for a sync.
    data_pending: tokio::sync::Notify,
    /// Snapshots committed since the last durable commit (no durable record names them).
    fresh: Mutex<HashSet<String>>,
    /// Directories no record needs any more (committed snapshots' overlay work dirs), removed
    /// by the next sync rather than by the commit that waits for them.
    leftovers: Mutex<Vec<PathBuf>>,
    syncs: AtomicU64,
    sync_micros: AtomicU64,
    /// The error number of a failed `syncfs` (0: none). The kernel reports a lost write-back once
    /// per descriptor, so a later `syncfs` succeeding proves nothing: after one failure no
    /// durable commit is made again (it would make records of lost files durable).
    sync_failed: AtomicI32,
}

impl GroupCommit {
    pub(crate) fn open(root: &Path) -> Result<Self, SnapshotError> {
        let file = std::fs::File::open(root).map_err(|source| SnapshotError::Io {
            path: root.to_owned(),
            source,
        })?;
        Ok(GroupCommit {
            gate: RwLock::new(()),
            pending: AtomicU8::new(Pending::Nothing as u8),
            root: file,
            root_path: root.to_owned(),
            data_pending: tokio::sync::Notify::new(),
            fresh: Mutex::new(HashSet::new()),
            leftovers: Mutex::new(Vec::new()),
            syncs: AtomicU64::new(0),
            sync_micros: AtomicU64::new(0),
            sync_failed: AtomicI32::new(0),
        })
    }

    /// A write of records only (no files of its own need to be on disk first); durable with the
    /// next sync.
    pub(crate) fn records<T>(
        &self,
        db: &redb::Database,
        f: impl FnOnce(&WriteTransaction) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        self.write_lazily(db, Pending::Records, f)
    }

    /// A write that records the files of the committed snapshot `name`: durable with the next
    /// sync, which syncs them first. Wakes [`GroupCommit::wait_data`].
    pub(crate) fn data<T>(
        &self,
        db: &redb::Database,
        name: &str,
        f: impl FnOnce(&WriteTransaction) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let out = {
            let _gate = self.gate.read();
            let out = self.write_lazily(db, Pending::Data, f)?;
            self.fresh.lock().insert(name.to_owned());
            out
        };
        self.data_pending.notify_one();
        Ok(out)
    }

    /// The removal of the committed snapshot `name`, durable when this returns unless the
    /// snapshot was committed after the last sync: no durable record names it then, and the
    /// removal can wait for the next sync like its commit did.
    pub(crate) fn remove_committed<T>(
        &self,
        db: &redb::Database,
        name: &str,
        f: impl FnOnce(&WriteTransaction) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        {
            // No sync can run meanwhile, so `name` stays unsynced until the removal is written.
            let _gate = self.gate.read();
            if self.fresh.lock().contains(name) {
                let out = self.write_lazily(db, Pending::Records, f)?;
                self.fresh.lock().remove(name);
                return Ok(out);
            }
        }
        self.durable(db, f)
    }

    /// A write that must be durable when this returns (one that deletes files after it): it
    /// takes every pending write along, syncing files first if any came.
    pub(crate) fn durable<T>(
        &self,
        db: &redb::Database,
        f: impl FnOnce(&WriteTransaction) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        self.commit_durably(db, f).map(|(out, _)| out)
    }

    /// Has the next sync remove `dir` (a directory nothing refers to; gone already is fine).
    pub(crate) fn remove_later(&self, dir: PathBuf) {
        self.leftovers.lock().push(dir);
    }

    /// Removes the directories left for it, then makes everything written so far durable (see
    /// the module docs). Blocking. Returns whether there was anything to sync.
    pub(crate) fn sync(&self, db: &redb::Database) -> Result<bool, SnapshotError> {
        let leftovers = std::mem::take(&mut *self.leftovers.lock());
        for dir in leftovers {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %dir.display(), error = %e, "removing a leftover directory");
                }
                _ => {}
            }
        }
        if self.pending() == Pending::Nothing {
            return Ok(false);
        }
        let (_, pending) = self.commit_durably(db, |txn| {
            // A change, so that the commit is written whatever redb does with empty ones.
            let mut counters = txn.open_table(COUNTERS).map_err(db_err)?;
            let n = counters
                .get("syncs")
                .map_err(db_err)?
                .map_or(0, |v| v.value());
            counters.insert("syncs", n + 1).map_err(db_err)?;
            Ok(())
        })?;
        Ok(pending != Pending::Nothing)
    }

    /// One durable commit of `f` and of everything pending; returns what was pending.
    fn commit_durably<T>(
        &self,
        db: &redb::Database,
        f: impl FnOnce(&WriteTransaction) -> Result<T, SnapshotError>,
    ) -> Result<(T, Pending), SnapshotError> {
        let started = Instant::now();
        self.check_synced()?;
        // Most files reach the disk before the gate closes: commits then wait only for the files
        // that came since (usually none) and for the durable commit.
        if self.pending() == Pending::Data {
            self.syncfs()?;
        }
        let _gate = self.gate.write();
        let pending = self.take_pending();
        let result = (|| {
            if pending == Pending::Data {
                self.syncfs()?;
            }
            let txn = db.begin_write().map_err(db_err)?;
            let out = f(&txn)?;
            txn.commit().map_err(db_err)?;
            Ok(out)
        })();
        match result {
            Ok(out) => {
                self.fresh.lock().clear();
                if pending != Pending::Nothing {
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                    self.sync_micros.fetch_add(
                        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                }
                Ok((out, pending))
            }
            Err(e) => {
                // Not durable: still pending, and the sync task must see it again (a sync that
                // found nothing pending while this ran is waiting for the next commit).
                self.pending.fetch_max(pending as u8, Ordering::AcqRel);
                if pending == Pending::Data {
                    self.data_pending.notify_one();
                }
                Err(e)
            }
        }
    }

    /// Resolves once files were committed since the last sync (at once if they were).
    pub(crate) async fn wait_data(&self) {
        loop {
            if self.pending() == Pending::Data {
                return;
            }
            self.data_pending.notified().await;
        }
    }

    pub(crate) fn pending(&self) -> Pending {
        Pending::from_u8(self.pending.load(Ordering::Acquire))
    }

    pub(crate) fn stats(&self) -> SyncStats {
        SyncStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            time: std::time::Duration::from_micros(self.sync_micros.load(Ordering::Relaxed)),
            commits_pending: self.pending() == Pending::Data,
        }
    }

    /// One write transaction committed without an fsync; `level` is what it leaves pending.
    fn write_lazily<T>(
        &self,
        db: &redb::Database,
        level: Pending,
        f: impl FnOnce(&WriteTransaction) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let mut txn = db.begin_write().map_err(db_err)?;
        txn.set_durability(redb::Durability::None).map_err(db_err)?;
        let out = f(&txn)?;
        txn.commit().map_err(db_err)?;
        self.pending.fetch_max(level as u8, Ordering::AcqRel);
        Ok(out)
    }

    /// Under the gate's write side: what is pending now (no file-bringing write can add to it
    /// meanwhile).
    fn take_pending(&self) -> Pending {
        Pending::from_u8(self.pending.swap(Pending::Nothing as u8, Ordering::AcqRel))
    }

    fn syncfs(&self) -> Result<(), SnapshotError> {
        rustix::fs::syncfs(&self.root).map_err(|e| {
            self.sync_failed.store(e.raw_os_error(), Ordering::Release);
            tracing::error!(root = %self.root_path.display(), error = %e, "syncing the snapshots' files failed: nothing committed from now on is made durable");
            SnapshotError::SyncFailed {
                root: self.root_path.clone(),
                source: e.into(),
            }
        })
    }

    /// Refuses once a `syncfs` failed (see `sync_failed`).
    fn check_synced(&self) -> Result<(), SnapshotError> {
        match self.sync_failed.load(Ordering::Acquire) {
            0 => Ok(()),
            errno => Err(SnapshotError::SyncFailed {
                root: self.root_path.clone(),
                source: std::io::Error::from_raw_os_error(errno),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use redb::TableDefinition;

    use super::*;

    const T: TableDefinition<'_, &str, u64> = TableDefinition::new("t");

    fn put(key: &'static str) -> impl FnOnce(&WriteTransaction) -> Result<(), SnapshotError> {
        move |txn| {
            txn.open_table(T)
                .map_err(db_err)?
                .insert(key, 1)
                .map_err(db_err)?;
            Ok(())
        }
    }

    fn keys(db: &redb::Database) -> Vec<String> {
        use redb::{ReadableDatabase as _, ReadableTable as _};
        let txn = db.begin_read().unwrap();
        let Ok(table) = txn.open_table(T) else {
            return Vec::new();
        };
        table
            .iter()
            .unwrap()
            .map(|i| i.unwrap().0.value().to_owned())
            .collect()
    }

    #[test]
    fn pending_rises_with_writes_and_a_sync_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let gc = GroupCommit::open(dir.path()).unwrap();
        assert!(!gc.sync(&db).unwrap(), "nothing to sync");
        gc.records(&db, put("a")).unwrap();
        assert_eq!(gc.pending(), Pending::Records);
        gc.data(&db, "n", put("b")).unwrap();
        assert_eq!(gc.pending(), Pending::Data);
        gc.records(&db, put("c")).unwrap();
        assert_eq!(gc.pending(), Pending::Data, "records do not lower it");
        assert!(gc.sync(&db).unwrap());
        assert_eq!(gc.pending(), Pending::Nothing);
        let stats = gc.stats();
        assert_eq!(stats.syncs, 1);
        assert!(!stats.commits_pending);
        assert_eq!(keys(&db), ["a", "b", "c"]);
    }

    #[test]
    fn a_durable_write_takes_pending_writes_along() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let gc = GroupCommit::open(dir.path()).unwrap();
        gc.data(&db, "n", put("a")).unwrap();
        gc.durable(&db, put("b")).unwrap();
        assert_eq!(gc.pending(), Pending::Nothing);
        assert_eq!(gc.stats().syncs, 1);
        assert!(!gc.sync(&db).unwrap());
    }

    #[test]
    fn a_failed_write_leaves_nothing_pending_and_a_failed_durable_write_keeps_what_was() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let gc = GroupCommit::open(dir.path()).unwrap();
        let fail = |_: &WriteTransaction| -> Result<(), SnapshotError> {
            Err(SnapshotError::NotFound("x".into()))
        };
        assert!(gc.data(&db, "n", fail).is_err());
        assert_eq!(gc.pending(), Pending::Nothing);
        gc.data(&db, "n", put("a")).unwrap();
        assert!(gc.durable(&db, fail).is_err());
        assert_eq!(gc.pending(), Pending::Data, "still to be synced");
        assert_eq!(gc.stats().syncs, 0);
    }

    #[test]
    fn a_snapshot_removed_before_any_sync_is_removed_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let gc = GroupCommit::open(dir.path()).unwrap();
        gc.data(&db, "young", put("young")).unwrap();
        gc.data(&db, "old", put("old")).unwrap();
        gc.remove_committed(&db, "young", put("young gone"))
            .unwrap();
        assert_eq!(gc.pending(), Pending::Data, "no durable commit for it");
        assert!(gc.sync(&db).unwrap());
        gc.records(&db, put("a record")).unwrap();
        gc.remove_committed(&db, "old", put("old gone")).unwrap();
        assert_eq!(gc.pending(), Pending::Nothing, "a durable record named it");
    }

    #[test]
    fn after_a_failed_syncfs_nothing_is_made_durable_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let gc = GroupCommit::open(dir.path()).unwrap();
        gc.data(&db, "a", put("a")).unwrap();
        // As `syncfs` records it when it fails.
        gc.sync_failed.store(libc::EIO, Ordering::Release);
        assert!(matches!(
            gc.sync(&db),
            Err(SnapshotError::SyncFailed { .. })
        ));
        assert!(matches!(
            gc.durable(&db, put("b")),
            Err(SnapshotError::SyncFailed { .. })
        ));
        assert_eq!(gc.pending(), Pending::Data, "still not durable");
        gc.records(&db, put("c")).unwrap();
    }

    #[tokio::test]
    async fn wait_data_resolves_on_a_commit_of_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let gc = std::sync::Arc::new(GroupCommit::open(dir.path()).unwrap());
        gc.records(&db, put("a")).unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), gc.wait_data());
        assert!(waiting.await.is_err(), "records alone wake no sync task");
        gc.data(&db, "n", put("b")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), gc.wait_data())
            .await
            .expect("woken");
        gc.sync(&db).unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), gc.wait_data());
        assert!(waiting.await.is_err(), "synced: nothing to wait for");
    }
}
