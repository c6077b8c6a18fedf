//! The cache's garbage collection, run while the engine serves: periodically, after every
//! session end (what the session held is collectable then), and at once when the state
//! directory's filesystem has less free space than `--gc-min-free`; never two passes at once.
//!
//! A pass collects down to a budget ([`budget`]): the configured one (`--gc-keep-bytes`), or
//! under disk pressure as much less as gives the free space back, but never below
//! `--gc-reserved`. What sessions hold always stays, and so does what was used in the last
//! minute (the last 5 seconds under disk pressure).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::GcConfig;
use crate::routes::Engine;

/// What the cache keeps whatever the budget: results used within this window (they may be
/// on their way to their requesters).
const RECENTLY_USED: Duration = Duration::from_secs(60);

/// The same window under disk pressure: a result unheld for this long is not being handed
/// over any more, and the space is needed now.
const RECENTLY_USED_UNDER_PRESSURE: Duration = Duration::from_secs(5);

/// How often the free space is checked.
const PRESSURE_CHECK: Duration = Duration::from_secs(10);

/// The budget of a pass: `config.keep_bytes` (at least `reserved`); when `free` is under
/// `min_free`, the cache's `usage` less what is missing, never below `reserved` (only
/// `reserved` when the usage is not known yet).
pub fn budget(config: &GcConfig, usage: Option<u64>, free: u64) -> u64 {
    let normal = config.keep_bytes.max(config.reserved);
    if free >= config.min_free {
        return normal;
    }
    let missing = config.min_free - free;
    match usage {
        Some(usage) => usage
            .saturating_sub(missing)
            .max(config.reserved)
            .min(normal),
        None => config.reserved,
    }
}

/// Bytes available to unprivileged writers on the filesystem of `dir` (`None` when it cannot
/// be read).
async fn free_space(dir: PathBuf) -> Option<u64> {
    tokio::task::spawn_blocking(move || {
        rustix::fs::statvfs(&dir)
            .ok()
            .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
    })
    .await
    .ok()
    .flatten()
}

/// Runs passes until aborted (see the module docs); counts them in the engine's metrics.
pub async fn run(
    api: dagr_api::CoreApi,
    engine: Arc<Engine>,
    config: GcConfig,
    state_dir: PathBuf,
    session_ended: Arc<Notify>,
) {
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pressure = tokio::time::interval(PRESSURE_CHECK);
    pressure.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The cache's size after the last pass.
    let mut usage: Option<u64> = None;
    // The free space when a pass under pressure last freed nothing: no new pass under pressure
    // until there is less (what is left is held, or not ours).
    let mut stuck_at: Option<u64> = None;
    loop {
        let free = tokio::select! {
            _ = tick.tick() => free_space(state_dir.clone()).await,
            () = session_ended.notified() => {
                stuck_at = None;
                free_space(state_dir.clone()).await
            }
            _ = pressure.tick() => match free_space(state_dir.clone()).await {
                Some(free) if free < config.min_free && stuck_at.is_none_or(|s| free < s) => {
                    Some(free)
                }
                _ => continue,
            },
        };
        let free = free.unwrap_or(u64::MAX);
        let pressed = free < config.min_free;
        let target = budget(&config, usage, free);
        if pressed {
            tracing::info!(
                free,
                min_free = config.min_free,
                budget = target,
                "little free space: collecting the cache"
            );
        }
        let solver = api.services().solver.clone();
        let worker = solver.runner().clone();
        let grace = if pressed {
            RECENTLY_USED_UNDER_PRESSURE
        } else {
            RECENTLY_USED
        };
        match worker.gc(&solver.leased_refs(), target, grace).await {
            Ok(report) => {
                usage = Some(report.remaining_bytes);
                stuck_at = (pressed && report.freed_bytes == 0).then_some(free);
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

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    fn config(keep: u64, min_free: u64, reserved: u64) -> GcConfig {
        GcConfig {
            keep_bytes: keep,
            interval: Duration::from_secs(300),
            min_free,
            reserved,
        }
    }

    #[test]
    fn enough_free_space_keeps_the_configured_budget() {
        let c = config(20 * G, 2 * G, G / 2);
        assert_eq!(budget(&c, Some(30 * G), 10 * G), 20 * G);
        assert_eq!(budget(&c, None, 2 * G), 20 * G);
        // The budget is never under the reserve.
        assert_eq!(budget(&config(G / 4, 0, G / 2), Some(G), 0), G / 2);
    }

    #[test]
    fn pressure_frees_what_is_missing_but_never_below_the_reserve() {
        let c = config(20 * G, 2 * G, G / 2);
        // 1.5 GiB free: 0.5 GiB is missing from a 10 GiB cache.
        assert_eq!(budget(&c, Some(10 * G), 3 * G / 2), 10 * G - G / 2);
        // Never more than the normal budget.
        assert_eq!(budget(&c, Some(40 * G), G), 20 * G);
        // Never below the reserve, and only the reserve when the usage is unknown.
        assert_eq!(budget(&c, Some(G), 0), G / 2);
        assert_eq!(budget(&c, None, G), G / 2);
    }
}
