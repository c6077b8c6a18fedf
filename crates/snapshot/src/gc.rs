//! Garbage collection: [`Snapshotter::gc`] removes unleased blobs and unreferenced committed
//! snapshots, least recently used first, until the total is under a budget.
//!
//! Kept always: blobs and snapshots named by a lease (leases may name blobs before they are
//! written: lease first, then write), active and view snapshots, and every snapshot that is the
//! parent of another one. A blob's "last use" is its file time (written, or re-written as a
//! duplicate); a snapshot's is when it was created, committed or last used as a parent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::content::{ContentError, ContentStore};
use crate::digest::Digest;
use crate::fsutil;
use crate::snapshotter::{Kind, SnapshotError, Snapshotter, record_parent_map};

/// Errors during garbage collection.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("gc: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("gc: {0}")]
    Content(#[from] ContentError),
    #[error("gc: measuring snapshot {key:?}: {source}")]
    Usage { key: String, source: std::io::Error },
}

/// What [`Snapshotter::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: Vec<Digest>,
    pub removed_snapshots: Vec<String>,
    /// Bytes freed (blob sizes plus snapshot disk usage).
    pub freed_bytes: u64,
    /// Bytes still used by blobs and snapshots afterwards.
    pub remaining_bytes: u64,
}

enum Candidate {
    Blob(Digest),
    Snapshot(String),
}

impl Snapshotter {
    /// Removes unreferenced, unleased blobs and committed snapshots, oldest-unused first, until
    /// blobs plus snapshots use at most `keep_bytes` (or nothing more may be removed).
    pub async fn gc(&self, content: &ContentStore, keep_bytes: u64) -> Result<GcReport, GcError> {
        let content = content.clone();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // Lease changes wait until this run is over.
            let _gc = inner.gc_lock.lock();
            let leases = inner.leases()?;
            let leased_blobs: BTreeSet<Digest> = leases
                .iter()
                .flat_map(|l| l.blobs.iter().cloned())
                .collect();
            let leased_snapshots: BTreeSet<String> = leases
                .iter()
                .flat_map(|l| l.snapshots.iter().cloned())
                .collect();

            let blobs = content.list()?;
            let mut records = inner.records()?;
            let mut snapshot_usage = BTreeMap::new();
            for (key, r) in &records {
                match fsutil::disk_usage(&inner.fs_dir(r.id)) {
                    Ok(usage) => {
                        snapshot_usage.insert(key.clone(), usage.size);
                    }
                    // Views and active snapshots come and go while this runs (they are not
                    // under the gc lock): one removed since the records were read is skipped.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(GcError::Usage {
                            key: key.clone(),
                            source,
                        });
                    }
                }
            }
            records.retain(|(key, _)| snapshot_usage.contains_key(key));
            let mut total: u64 =
                blobs.iter().map(|b| b.size).sum::<u64>() + snapshot_usage.values().sum::<u64>();
            let mut report = GcReport::default();
            let mut blob_candidates: Vec<(SystemTime, Digest, u64)> = blobs
                .into_iter()
                .filter(|b| !leased_blobs.contains(&b.digest))
                .map(|b| (b.modified, b.digest, b.size))
                .collect();
            let mut skipped_snapshots = BTreeSet::new();

            while total > keep_bytes {
                let children = record_parent_map(&records);
                let oldest_snapshot = records
                    .iter()
                    .filter(|(k, r)| {
                        r.kind == Kind::Committed
                            && !children.contains_key(k)
                            && !leased_snapshots.contains(k)
                            && !skipped_snapshots.contains(k)
                    })
                    .min_by_key(|(_, r)| r.last_used_ms)
                    .map(|(k, r)| {
                        (
                            SystemTime::UNIX_EPOCH
                                + std::time::Duration::from_millis(r.last_used_ms),
                            k.clone(),
                        )
                    });
                let oldest_blob = blob_candidates
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, b)| b.0)
                    .map(|(i, b)| (b.0, i));
                let pick = match (oldest_snapshot, oldest_blob) {
                    (None, None) => break,
                    (Some((_, k)), None) => Candidate::Snapshot(k),
                    (None, Some((_, i))) => Candidate::Blob(blob_candidates.swap_remove(i).1),
                    (Some((st, k)), Some((bt, i))) => {
                        if st <= bt {
                            Candidate::Snapshot(k)
                        } else {
                            Candidate::Blob(blob_candidates.swap_remove(i).1)
                        }
                    }
                };
                match pick {
                    Candidate::Blob(d) => {
                        let size = content.size(&d).unwrap_or(0);
                        match content.delete(&d) {
                            Ok(()) | Err(ContentError::NotFound(_)) => {}
                            Err(e) => return Err(e.into()),
                        }
                        total = total.saturating_sub(size);
                        report.freed_bytes += size;
                        report.removed_blobs.push(d);
                    }
                    Candidate::Snapshot(key) => match inner.remove(&key, true) {
                        Ok(true) => {
                            let size = snapshot_usage.get(&key).copied().unwrap_or(0);
                            total = total.saturating_sub(size);
                            report.freed_bytes += size;
                            records.retain(|(k, _)| k != &key);
                            report.removed_snapshots.push(key);
                        }
                        // Gained a lease or a child meanwhile, or already gone.
                        Ok(false)
                        | Err(SnapshotError::HasChildren { .. })
                        | Err(SnapshotError::NotFound(_)) => {
                            skipped_snapshots.insert(key);
                        }
                        Err(e) => return Err(e.into()),
                    },
                }
            }
            report.remaining_bytes = total;
            Ok(report)
        })
        .await
        .map_err(|e| GcError::Snapshot(SnapshotError::Task(e.to_string())))?
    }
}
