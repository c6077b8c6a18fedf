//! `GET /cache/usage` and `POST /cache/prune` (`dagr du`, `dagr prune`): what the cache holds
//! by kind, and removing what no session or exec holds (everything, or what was not used for a
//! while): results with their layers and blobs, `Query.http` downloads and, when asked for
//! (`dagr prune` asks unless `--keep-cache-volumes`, as `docker builder prune` and Dagger's
//! prune remove them too), cache volumes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What `POST /cache/prune` takes (JSON).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneRequest {
    /// Keep results used within this many seconds; `None` prunes everything not held.
    #[serde(default)]
    pub older_than_seconds: Option<u64>,
    /// Remove the cache volumes no exec holds too (by the same age). Off unless asked for, so
    /// that callers of before keep their volumes; `dagr prune` asks unless told to keep them.
    #[serde(default)]
    pub prune_cache_volumes: bool,
}

/// What `POST /cache/prune` answers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub freed_bytes: u64,
    pub removed_results: usize,
    pub removed_cache_volumes: usize,
    pub removed_downloads: usize,
    pub remaining_bytes: u64,
}

/// The cache's usage by kind (`GET /cache/usage`).
pub async fn usage(api: &dagr_api::CoreApi) -> Result<dagr_worker::CacheUsage, String> {
    let solver = &api.services().solver;
    let results: Vec<_> = solver.entries().into_iter().map(|e| e.result).collect();
    solver
        .runner()
        .usage(&results)
        .await
        .map_err(|e| e.to_string())
}

/// A running solve's results are being handed over: they stay for this long after their use.
const HANDOVER: Duration = Duration::from_secs(5);

/// Removes every result no session holds (and not used within `older_than_seconds` when
/// given), with the layers and blobs only they needed; then the downloads and, when asked for
/// (`prune_cache_volumes`), the cache volumes no exec holds, by the same age.
pub async fn prune(api: &dagr_api::CoreApi, request: PruneRequest) -> Result<PruneReport, String> {
    let solver = api.services().solver.clone();
    let worker = solver.runner().clone();
    let mut keep = solver.leased_refs();
    if let Some(seconds) = request.older_than_seconds {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let since = now.saturating_sub(seconds);
        keep.extend(
            solver
                .entries()
                .into_iter()
                .filter(|e| e.last_used_unix >= since)
                .map(|e| e.result),
        );
    }
    let report = worker
        .gc(&keep, 0, HANDOVER)
        .await
        .map_err(|e| e.to_string())?;
    let pruned = {
        let worker = worker.clone();
        tokio::task::spawn_blocking(move || solver.prune(|r| worker.has_result(r)))
    }
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let unused_for = request.older_than_seconds.map(Duration::from_secs);
    let volumes = if request.prune_cache_volumes {
        worker
            .prune_cache_volumes(unused_for)
            .await
            .map_err(|e| e.to_string())?
    } else {
        dagr_worker::Pruned::default()
    };
    let downloads = worker
        .prune_downloads(unused_for)
        .await
        .map_err(|e| e.to_string())?;
    Ok(PruneReport {
        freed_bytes: report.freed_bytes + volumes.freed_bytes + downloads.freed_bytes,
        removed_results: pruned.len(),
        removed_cache_volumes: volumes.removed,
        removed_downloads: downloads.removed,
        remaining_bytes: report.remaining_bytes,
    })
}
