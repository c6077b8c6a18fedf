//! The cache's garbage collection, run periodically while the engine serves.

use std::time::Duration;

/// What the cache keeps whatever the budget: results used within this window.
const RECENTLY_USED: Duration = Duration::from_secs(60);

/// Collects the cache down to `keep_bytes` every `every`: what sessions hold and what was used in
/// the last minute stay; the solver forgets results whose snapshots went. Runs until aborted.
pub async fn run(api: dagr_api::CoreApi, keep_bytes: u64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let solver = api.services().solver.clone();
        let worker = solver.runner().clone();
        match worker
            .gc(&solver.leased_refs(), keep_bytes, RECENTLY_USED)
            .await
        {
            Ok(report) => {
                let pruned =
                    tokio::task::spawn_blocking(move || solver.prune(|r| worker.has_result(r)))
                        .await;
                tracing::debug!(
                    freed = report.freed_bytes,
                    remaining = report.remaining_bytes,
                    snapshots = report.removed_snapshots.len(),
                    blobs = report.removed_blobs.len(),
                    pruned = ?pruned.map(|p| p.map(|k| k.len())),
                    "garbage collection"
                );
            }
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}
