//! The cache's garbage collection, run while the engine serves: periodically and after every
//! session end (what the session held is collectable then), never two passes at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::routes::Engine;

/// What the cache keeps whatever the budget: results used within this window.
const RECENTLY_USED: Duration = Duration::from_secs(60);

/// Collects the cache down to `keep_bytes` every `every` and whenever `session_ended` is
/// notified (session ends arriving during a pass are coalesced into the next one): what
/// sessions hold and what was used in the last minute stay; the solver forgets results whose
/// snapshots went. Counts its passes in the engine's metrics. Runs until aborted.
pub async fn run(
    api: dagr_api::CoreApi,
    engine: Arc<Engine>,
    keep_bytes: u64,
    every: Duration,
    session_ended: Arc<Notify>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = session_ended.notified() => {}
        }
        let solver = api.services().solver.clone();
        let worker = solver.runner().clone();
        match worker
            .gc(&solver.leased_refs(), keep_bytes, RECENTLY_USED)
            .await
        {
            Ok(report) => {
                engine.metrics.gc_done(report.freed_bytes);
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
