//! The cache's group commit, run while the engine serves. Snapshot commits and new index entries
//! are written without fsync (an exec's overlay is even unmounted without one), so a result
//! costs its requester no disk flush; this task makes them durable shortly after, many at once:
//! `syncfs` and one durable commit for the snapshots ([`dagr_snapshot::Snapshotter::sync`]),
//! then one for the index ([`dagr_solver::Solver::sync_index`]). A pass starts [`GATHER`] after
//! the first write it covers. A crash loses at most the results finished since the last pass:
//! they run again. An index entry that outlives its snapshot is pruned at startup.

use std::time::Duration;

/// How long a failed pass waits before the next one (what failed stays pending).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long a pass waits after the first write it will cover, gathering the writes that follow:
/// back-to-back execs then share one pass, and a pass's disk flushes seldom slow down the execs
/// running beside it. What a crash can lose grows by as much.
const GATHER: Duration = Duration::from_millis(50);

/// Runs passes until aborted; each pass covers everything written before it started.
pub async fn run(api: dagr_api::CoreApi) {
    let solver = api.services().solver.clone();
    let snapshots = solver.runner().snapshots().clone();
    loop {
        tokio::select! {
            () = snapshots.wait_unsynced() => {}
            () = solver.wait_index_unsynced() => {}
        }
        tokio::time::sleep(GATHER).await;
        if !pass(&api).await {
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// One pass: the snapshots first (their files, then their records), then the index, so that a
/// synced index entry rarely names a snapshot that is not synced yet. Errors are logged; what
/// failed stays pending. Returns whether both succeeded.
pub async fn pass(api: &dagr_api::CoreApi) -> bool {
    let solver = api.services().solver.clone();
    let done = tokio::task::spawn_blocking(move || {
        let snapshots = solver.runner().snapshots().sync();
        if let Err(e) = &snapshots {
            tracing::warn!(error = %e, "syncing the snapshots");
        }
        let index = solver.sync_index();
        if let Err(e) = &index {
            tracing::warn!(error = %e, "syncing the cache index");
        }
        snapshots.is_ok() && index.is_ok()
    })
    .await;
    done.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "syncing the cache");
        false
    })
}
