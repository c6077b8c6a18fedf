//! `HostDir` ops: a client's host directory read incrementally (see [`crate::host_sync`]): the
//! host lists it through [`crate::HostAccess`], the worker compares the listing with the last
//! read of the same directory by the same host and fetches only what changed, into a child of
//! that read's snapshot. The result is keyed by the digest of its content.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dagr_metadata::ClientRef;
use dagr_solver::{ResultRef, RunOutput};

use crate::host_sync::{self, Baseline, BaselineKey};
use crate::mounts::Cleanup;
use crate::{HostError, HostListing, Worker, WorkerError, blocking};

/// What host reads did since the worker opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostSyncStats {
    /// Directory reads.
    pub reads: u64,
    /// Reads that found the tree as the last read of it left it (nothing stored).
    pub unchanged: u64,
    /// Files whose content was transferred.
    pub files_fetched: u64,
    /// Bytes of content transferred.
    pub bytes_fetched: u64,
}

#[derive(Default)]
pub(crate) struct HostSyncCounters {
    reads: std::sync::atomic::AtomicU64,
    unchanged: std::sync::atomic::AtomicU64,
    files_fetched: std::sync::atomic::AtomicU64,
    bytes_fetched: std::sync::atomic::AtomicU64,
}

impl Worker {
    /// Counters of host reads.
    pub fn host_sync_stats(&self) -> HostSyncStats {
        let c = &self.inner.host_sync;
        HostSyncStats {
            reads: c.reads.load(Ordering::Relaxed),
            unchanged: c.unchanged.load(Ordering::Relaxed),
            files_fetched: c.files_fetched.load(Ordering::Relaxed),
            bytes_fetched: c.bytes_fetched.load(Ordering::Relaxed),
        }
    }

    pub(crate) async fn run_host_dir(
        &self,
        client: &ClientRef,
        path: &str,
        include: &[String],
        exclude: &[String],
    ) -> Result<RunOutput, WorkerError> {
        let host_err = |source: HostError| WorkerError::Host {
            path: path.to_owned(),
            client: client.clone(),
            source: Box::new(source),
        };
        let counters = &self.inner.host_sync;
        counters.reads.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let HostListing {
            host,
            root,
            walk_started_ns,
            entries,
            fetch,
        } = self
            .inner
            .host
            .list_dir(client, path, include, exclude)
            .await
            .map_err(host_err)?;
        let key = BaselineKey {
            host,
            root,
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        };
        let baseline = self.usable_baseline(&key).await;
        let compared = baseline.clone();
        let listed = started.elapsed();
        let (plan, entries) = blocking(move || {
            let plan = host_sync::plan(compared.as_deref(), &entries);
            Ok((plan, entries))
        })
        .await?;
        let planned = started.elapsed();
        if let Some(b) = &baseline
            && plan.unchanged()
        {
            // The result is the last read's: nothing to write, nothing to store.
            drop(fetch);
            counters.unchanged.fetch_add(1, Ordering::Relaxed);
            let mut out =
                RunOutput::new(ResultRef::new(b.snapshot.clone(), serde_json::Value::Null));
            out.content_digest = Some(b.digest.clone());
            return Ok(out);
        }
        let mut cleanup = Cleanup::new(self.clone());
        let parent = match &baseline {
            Some(b) => b.snapshot.clone(),
            None => self.empty_snapshot().await?,
        };
        let (snapshot_key, dir) = self
            .prepare_mounted(&mut cleanup, Some(&parent), "host")
            .await?;
        let (plan, entries) = (Arc::new(plan), Arc::new(entries));
        let (p, e, d) = (plan.clone(), entries.clone(), dir.clone());
        blocking(move || Ok(host_sync::apply_structure(&d, &e, &p)?)).await?;
        let structured = started.elapsed();
        let bytes = fetch
            .fetch(plan.wanted.clone(), dir.clone())
            .await
            .map_err(host_err)?;
        let transferred = started.elapsed();
        counters
            .files_fetched
            .fetch_add(plan.wanted.len() as u64, Ordering::Relaxed);
        counters.bytes_fetched.fetch_add(bytes, Ordering::Relaxed);
        let files = plan.wanted.len();
        let records = blocking(move || {
            host_sync::apply_dir_meta(&dir, &entries, &plan)?;
            let entries = Arc::try_unwrap(entries).unwrap_or_else(|shared| (*shared).clone());
            Ok(host_sync::records(&dir, entries, &plan)?)
        })
        .await?;
        let fetched = started.elapsed();
        let digest = host_sync::tree_digest(&records);
        let mut out = self.commit_output(cleanup, snapshot_key).await?;
        tracing::debug!(
            ?listed,
            ?planned,
            ?structured,
            ?transferred,
            ?fetched,
            committed = ?started.elapsed(),
            files,
            "host read"
        );
        out.content_digest = Some(digest.clone());
        let next = Baseline::new(out.result.id().to_owned(), walk_started_ns, records, digest);
        self.keep_baseline(key, next).await;
        Ok(out)
    }

    /// The kept baseline of `key`, if its snapshot is still there and its chain short enough
    /// to build on.
    async fn usable_baseline(&self, key: &BaselineKey) -> Option<Arc<Baseline>> {
        let baseline = self.inner.host_baselines.get(key)?;
        let snapshots = &self.inner.snapshots;
        let mut depth = 0;
        let mut at = Some(baseline.snapshot.clone());
        while let Some(k) = at {
            match snapshots.stat(&k) {
                Ok(info) => at = info.parent,
                Err(_) => {
                    // Gone (removed as a duplicate since): forget it.
                    if self.inner.host_baselines.remove(key, &baseline) {
                        let _ = snapshots.delete_lease(&baseline.lease).await;
                    }
                    return None;
                }
            }
            depth += 1;
        }
        (depth < host_sync::MAX_CHAIN).then_some(baseline)
    }

    /// Keeps `baseline` for `key`, its snapshot held by its lease; deletes the leases of the
    /// baselines it replaces or pushes out of the budget.
    async fn keep_baseline(&self, key: BaselineKey, baseline: Baseline) {
        let snapshots = &self.inner.snapshots;
        if let Err(e) = snapshots
            .set_lease_snapshots(&baseline.lease, vec![baseline.snapshot.clone()])
            .await
        {
            tracing::warn!(error = %e, "keeping a host read as the next one's baseline");
            return;
        }
        for dropped in self.inner.host_baselines.insert(key, Arc::new(baseline)) {
            let _ = snapshots.delete_lease(&dropped.lease).await;
        }
    }

    /// Baselines on the snapshot of `dropped` move to `kept` (the same content, which the
    /// solver keeps instead).
    pub(crate) async fn move_baselines(&self, dropped: &str, kept: &str) {
        let snapshots = &self.inner.snapshots;
        for (key, old) in self.inner.host_baselines.keys_on(dropped) {
            let moved = Baseline::new(
                kept.to_owned(),
                old.walk_started_ns,
                old.records.clone(),
                old.digest.clone(),
            );
            if let Err(e) = snapshots
                .set_lease_snapshots(&moved.lease, vec![moved.snapshot.clone()])
                .await
            {
                tracing::warn!(error = %e, "moving a host read's baseline to the result kept");
                continue;
            }
            match self
                .inner
                .host_baselines
                .replace(&key, &old, Arc::new(moved))
            {
                Ok(()) => {
                    let _ = snapshots.delete_lease(&old.lease).await;
                }
                Err(moved) => {
                    let _ = snapshots.delete_lease(&moved.lease).await;
                }
            }
        }
    }

    /// Drops every baseline (their snapshots become collectable).
    pub(crate) async fn drop_baselines(&self) {
        for dropped in self.inner.host_baselines.clear() {
            let _ = self.inner.snapshots.delete_lease(&dropped.lease).await;
        }
    }
}
