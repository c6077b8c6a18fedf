//! The persistent result index: cache key -> [`ResultRef`] with timestamps and a size hint, in a
//! redb database, with an in-memory map in front so that cache hits take no database
//! transaction. A new result is one commit without fsync; [`ResultIndex::sync`] makes every
//! result written since the last sync durable at once (group commit: a sync task calls it after
//! [`ResultIndex::wait_unsynced`]). A crash loses the results written since; an entry that
//! outlives its result's data after a crash is pruned at startup (`Solver::prune`). Last-used
//! times are kept in memory and written by [`ResultIndex::flush`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use redb::{ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::key::CacheKey;
use crate::runner::ResultRef;

const RESULTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("results");
/// `syncs`: how many syncs made results durable (written so that a sync always commits).
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Errors of the result index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("result index database {path} error: {source}")]
    Db { path: PathBuf, source: redb::Error },
    #[error("encoding index entry {key} failed: {source}")]
    Encode {
        key: CacheKey,
        source: serde_json::Error,
    },
    #[error("result index write for {key} did not complete: {reason}")]
    Task { key: CacheKey, reason: String },
}

impl IndexError {
    /// Whether the database file itself is damaged (not readable as a database: corrupted, or
    /// not a database at all), as opposed to busy, missing or not permitted.
    pub fn is_damaged(&self) -> bool {
        let IndexError::Db { source, .. } = self else {
            return false;
        };
        match source {
            redb::Error::Corrupted(_) => true,
            // A file that is not a redb database at all.
            redb::Error::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
            _ => false,
        }
    }
}

/// One entry of the index, as reported to GC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub key: CacheKey,
    pub result: ResultRef,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// Seconds since the Unix epoch.
    pub last_used_unix: u64,
    pub size_hint: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    result: ResultRef,
    created_unix: u64,
    last_used_unix: u64,
    #[serde(default)]
    size_hint: Option<u64>,
}

struct MemEntry {
    result: ResultRef,
    created_unix: u64,
    last_used_unix: AtomicU64,
    size_hint: Option<u64>,
    /// `last_used_unix` changed since it was last written.
    dirty: AtomicBool,
}

impl MemEntry {
    fn stored(&self) -> StoredEntry {
        StoredEntry {
            result: self.result.clone(),
            created_unix: self.created_unix,
            last_used_unix: self.last_used_unix.load(Ordering::Relaxed),
            size_hint: self.size_hint,
        }
    }

    fn from_stored(s: StoredEntry) -> Self {
        MemEntry {
            result: s.result,
            created_unix: s.created_unix,
            last_used_unix: AtomicU64::new(s.last_used_unix),
            size_hint: s.size_hint,
            dirty: AtomicBool::new(false),
        }
    }
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The index. Cheap lookups from memory; writes go to redb first, then to memory.
pub(crate) struct ResultIndex {
    path: PathBuf,
    db: Arc<redb::Database>,
    mem: RwLock<HashMap<CacheKey, MemEntry>>,
    /// Inserts so far, and their wall time in microseconds.
    writes: AtomicU64,
    write_micros: AtomicU64,
    /// Results were written since the last sync.
    unsynced: AtomicBool,
    written: tokio::sync::Notify,
    /// Syncs that made results durable, and their wall time in microseconds.
    syncs: AtomicU64,
    sync_micros: AtomicU64,
}

/// The index's inserts and syncs since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexWrites {
    /// Results written.
    pub count: u64,
    /// Their wall time, summed (each a commit without fsync).
    pub time: std::time::Duration,
    /// Syncs that made written results durable (one durable commit each).
    pub syncs: u64,
    /// Their wall time, summed.
    pub sync_time: std::time::Duration,
    /// Whether results wait for the next sync.
    pub unsynced: bool,
}

impl ResultIndex {
    /// Opens (or creates) the database at `path` and loads every entry into memory. Entries that
    /// do not decode are dropped from the database (logged).
    pub(crate) fn open(path: &Path) -> Result<Self, IndexError> {
        let db_err = |e: redb::Error| IndexError::Db {
            path: path.to_owned(),
            source: e,
        };
        let db = redb::Database::create(path).map_err(|e| db_err(e.into()))?;
        let mut mem = HashMap::new();
        let txn = db.begin_write().map_err(|e| db_err(e.into()))?;
        {
            let mut table = txn.open_table(RESULTS).map_err(|e| db_err(e.into()))?;
            let mut corrupt = Vec::new();
            for item in table.iter().map_err(|e| db_err(e.into()))? {
                let (k, v) = item.map_err(|e| db_err(e.into()))?;
                let key_bytes = k.value();
                let decoded = <[u8; 32]>::try_from(key_bytes).ok().and_then(|kb| {
                    serde_json::from_slice::<StoredEntry>(v.value())
                        .ok()
                        .map(|s| (CacheKey::from_bytes(kb), s))
                });
                match decoded {
                    Some((key, stored)) => {
                        mem.insert(key, MemEntry::from_stored(stored));
                    }
                    None => corrupt.push(key_bytes.to_vec()),
                }
            }
            for k in corrupt {
                tracing::warn!(key = hex::encode(&k), path = %path.display(), "dropping undecodable result index entry");
                table.remove(k.as_slice()).map_err(|e| db_err(e.into()))?;
            }
        }
        txn.commit().map_err(|e| db_err(e.into()))?;
        Ok(Self {
            path: path.to_owned(),
            db: Arc::new(db),
            mem: RwLock::new(mem),
            writes: AtomicU64::new(0),
            write_micros: AtomicU64::new(0),
            unsynced: AtomicBool::new(false),
            written: tokio::sync::Notify::new(),
            syncs: AtomicU64::new(0),
            sync_micros: AtomicU64::new(0),
        })
    }

    /// A cache hit: the result, with its last-used time bumped in memory.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<ResultRef> {
        let mem = self.mem.read();
        let entry = mem.get(key)?;
        let now = now_unix();
        if entry.last_used_unix.load(Ordering::Relaxed) != now {
            entry.last_used_unix.store(now, Ordering::Relaxed);
            entry.dirty.store(true, Ordering::Relaxed);
        }
        Some(entry.result.clone())
    }

    /// The result without touching its last-used time.
    pub(crate) fn peek(&self, key: &CacheKey) -> Option<ResultRef> {
        self.mem.read().get(key).map(|e| e.result.clone())
    }

    pub(crate) fn writes(&self) -> IndexWrites {
        IndexWrites {
            count: self.writes.load(Ordering::Relaxed),
            time: std::time::Duration::from_micros(self.write_micros.load(Ordering::Relaxed)),
            syncs: self.syncs.load(Ordering::Relaxed),
            sync_time: std::time::Duration::from_micros(self.sync_micros.load(Ordering::Relaxed)),
            unsynced: self.unsynced.load(Ordering::Acquire),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.mem.read().len()
    }

    /// Records `result` under `key` (durable with the next [`ResultIndex::sync`]), unless the
    /// key is already indexed: then the indexed result is kept and returned (a key's result
    /// never changes).
    pub(crate) async fn insert(
        &self,
        key: CacheKey,
        result: ResultRef,
        size_hint: Option<u64>,
    ) -> Result<ResultRef, IndexError> {
        if let Some(existing) = self.peek(&key) {
            return Ok(existing);
        }
        let now = now_unix();
        let stored = StoredEntry {
            result,
            created_unix: now,
            last_used_unix: now,
            size_hint,
        };
        let bytes =
            serde_json::to_vec(&stored).map_err(|source| IndexError::Encode { key, source })?;
        let db = Arc::clone(&self.db);
        let path = self.path.clone();
        let started = std::time::Instant::now();
        let kept = tokio::task::spawn_blocking(move || write_if_absent(&db, &path, key, &bytes))
            .await
            .map_err(|e| IndexError::Task {
                key,
                reason: e.to_string(),
            })??;
        self.unsynced.store(true, Ordering::Release);
        self.written.notify_one();
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let stored = match kept {
            Some(existing) => existing,
            None => stored,
        };
        let mut mem = self.mem.write();
        let entry = mem
            .entry(key)
            .or_insert_with(|| MemEntry::from_stored(stored));
        Ok(entry.result.clone())
    }

    pub(crate) fn entries(&self) -> Vec<IndexEntry> {
        self.mem
            .read()
            .iter()
            .map(|(k, e)| IndexEntry {
                key: *k,
                result: e.result.clone(),
                created_unix: e.created_unix,
                last_used_unix: e.last_used_unix.load(Ordering::Relaxed),
                size_hint: e.size_hint,
            })
            .collect()
    }

    /// Removes every entry whose result `keep` rejects, from the database and from memory.
    /// Blocking (one durable commit).
    pub(crate) fn prune(
        &self,
        keep: impl Fn(&ResultRef) -> bool,
    ) -> Result<Vec<CacheKey>, IndexError> {
        let doomed: Vec<CacheKey> = self
            .mem
            .read()
            .iter()
            .filter(|(_, e)| !keep(&e.result))
            .map(|(k, _)| *k)
            .collect();
        if doomed.is_empty() {
            return Ok(doomed);
        }
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut table = txn.open_table(RESULTS).map_err(|e| self.db_err(e))?;
            for key in &doomed {
                table
                    .remove(key.as_bytes().as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        let mut mem = self.mem.write();
        for key in &doomed {
            mem.remove(key);
        }
        Ok(doomed)
    }

    /// Makes every result written so far durable (one durable commit, if any was written since
    /// the last sync). Blocking. Returns whether there was anything to sync.
    pub(crate) fn sync(&self) -> Result<bool, IndexError> {
        if !self.unsynced.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let result = (|| {
            let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
            {
                let mut meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
                let n = meta
                    .get("syncs")
                    .map_err(|e| self.db_err(e))?
                    .map_or(0, |v| v.value());
                meta.insert("syncs", n + 1).map_err(|e| self.db_err(e))?;
            }
            txn.commit().map_err(|e| self.db_err(e))
        })();
        if let Err(e) = result {
            self.unsynced.store(true, Ordering::Release);
            return Err(e);
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(true)
    }

    /// Resolves once results were written since the last sync (at once if they were).
    pub(crate) async fn wait_unsynced(&self) {
        loop {
            if self.unsynced.load(Ordering::Acquire) {
                return;
            }
            self.written.notified().await;
        }
    }

    /// Writes last-used times changed since the previous flush. Blocking (one durable commit if
    /// anything changed). Returns how many entries were written.
    pub(crate) fn flush(&self) -> Result<usize, IndexError> {
        let dirty: Vec<(CacheKey, Vec<u8>)> = {
            let mem = self.mem.read();
            let mut out = Vec::new();
            for (k, e) in mem.iter() {
                if e.dirty.swap(false, Ordering::Relaxed) {
                    let bytes = serde_json::to_vec(&e.stored())
                        .map_err(|source| IndexError::Encode { key: *k, source })?;
                    out.push((*k, bytes));
                }
            }
            out
        };
        if dirty.is_empty() {
            return Ok(0);
        }
        let result = (|| {
            let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
            {
                let mut table = txn.open_table(RESULTS).map_err(|e| self.db_err(e))?;
                for (key, bytes) in &dirty {
                    // Only update entries still present (not pruned meanwhile).
                    let present = table
                        .get(key.as_bytes().as_slice())
                        .map_err(|e| self.db_err(e))?
                        .is_some();
                    if present {
                        table
                            .insert(key.as_bytes().as_slice(), bytes.as_slice())
                            .map_err(|e| self.db_err(e))?;
                    }
                }
            }
            txn.commit().map_err(|e| self.db_err(e))
        })();
        if let Err(e) = result {
            // Mark them dirty again so a later flush retries.
            let mem = self.mem.read();
            for (key, _) in &dirty {
                if let Some(entry) = mem.get(key) {
                    entry.dirty.store(true, Ordering::Relaxed);
                }
            }
            return Err(e);
        }
        Ok(dirty.len())
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> IndexError {
        IndexError::Db {
            path: self.path.clone(),
            source: e.into(),
        }
    }
}

/// Inserts `bytes` under `key` unless present; returns the present entry if there was one.
fn write_if_absent(
    db: &redb::Database,
    path: &Path,
    key: CacheKey,
    bytes: &[u8],
) -> Result<Option<StoredEntry>, IndexError> {
    let db_err = |e: redb::Error| IndexError::Db {
        path: path.to_owned(),
        source: e,
    };
    let mut txn = db.begin_write().map_err(|e| db_err(e.into()))?;
    // Durable with the next sync (see the module docs).
    txn.set_durability(redb::Durability::None)
        .map_err(|e| db_err(e.into()))?;
    let existing = {
        let mut table = txn.open_table(RESULTS).map_err(|e| db_err(e.into()))?;
        let existing = table
            .get(key.as_bytes().as_slice())
            .map_err(|e| db_err(e.into()))?
            .and_then(|v| serde_json::from_slice::<StoredEntry>(v.value()).ok());
        if existing.is_none() {
            table
                .insert(key.as_bytes().as_slice(), bytes)
                .map_err(|e| db_err(e.into()))?;
        }
        existing
    };
    txn.commit().map_err(|e| db_err(e.into()))?;
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::{IndexError, ResultIndex};
    use crate::key::CacheKey;
    use crate::runner::ResultRef;

    #[tokio::test]
    async fn an_insert_waits_for_a_sync_and_a_sync_covers_every_insert_before_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("solver.redb");
        let index = ResultIndex::open(&path).expect("open");
        assert!(!index.sync().expect("sync"), "nothing to sync");
        for n in 1..=3u8 {
            let result = ResultRef::new(format!("r-{n}"), serde_json::Value::Null);
            index
                .insert(CacheKey::from_bytes([n; 32]), result, None)
                .await
                .expect("insert");
        }
        assert!(index.writes().unsynced);
        tokio::time::timeout(std::time::Duration::from_secs(5), index.wait_unsynced())
            .await
            .expect("an insert wakes the sync task");
        assert!(index.sync().expect("sync"));
        assert!(!index.sync().expect("sync"), "synced already");
        let writes = index.writes();
        assert_eq!((writes.count, writes.syncs, writes.unsynced), (3, 1, false));
        drop(index);
        let index = ResultIndex::open(&path).expect("reopen");
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn only_unreadable_databases_are_damaged() {
        let db = |source| IndexError::Db {
            path: "/x/solver.redb".into(),
            source,
        };
        assert!(db(redb::Error::Corrupted("bad page".into())).is_damaged());
        let not_a_db = std::io::Error::new(std::io::ErrorKind::InvalidData, "magic");
        assert!(db(redb::Error::Io(not_a_db)).is_damaged());
        // Another engine holding it, or no permission: not damaged, never set aside.
        assert!(!db(redb::Error::DatabaseAlreadyOpen).is_damaged());
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!db(redb::Error::Io(denied)).is_damaged());
    }
}
