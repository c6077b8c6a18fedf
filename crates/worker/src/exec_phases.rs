//! Where uncached execs spend their time: each run's phases summed since the worker opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dagr_executor::ExecPhases;

/// The phases of exec ops run since the worker opened, summed (execs that failed included up to
/// the phase they reached on the worker's side; the executor's phases count for runs that
/// succeeded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecPhaseTotals {
    /// Exec runs whose executor phases are counted.
    pub runs: u64,
    /// Those of them that ran on a launcher started ahead (see
    /// `dagr_executor::ExecutorConfig::placed_launchers`).
    pub placed_runs: u64,
    /// Preparing the exec: writable snapshots of its root and mounts prepared and mounted,
    /// cache volumes, secrets, and the services it binds started.
    pub mount: Duration,
    /// The executor's phases.
    pub executor: ExecPhases,
    /// Unmounting and committing the outputs.
    pub commit: Duration,
}

impl ExecPhaseTotals {
    /// Each phase with its name, in the order a run goes through them.
    pub fn named(&self) -> [(&'static str, Duration); 8] {
        let e = &self.executor;
        [
            ("mount", self.mount),
            ("bundle", e.bundle),
            ("prestart", e.prestart),
            ("cgroup", e.cgroup),
            ("spec", e.spec),
            ("runtime", e.runtime),
            ("cleanup", e.cleanup),
            ("commit", self.commit),
        ]
    }
}

/// Sums in microseconds, updated without locks.
#[derive(Default)]
pub(crate) struct ExecPhaseCounters {
    runs: AtomicU64,
    placed_runs: AtomicU64,
    micros: [AtomicU64; 8],
}

const MOUNT: usize = 0;
const COMMIT: usize = 7;

impl ExecPhaseCounters {
    fn add(&self, index: usize, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.micros[index].fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn add_mount(&self, d: Duration) {
        self.add(MOUNT, d);
    }

    pub(crate) fn add_commit(&self, d: Duration) {
        self.add(COMMIT, d);
    }

    pub(crate) fn add_run(&self, phases: &ExecPhases, placed_launcher: bool) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        if placed_launcher {
            self.placed_runs.fetch_add(1, Ordering::Relaxed);
        }
        let executor = [
            phases.bundle,
            phases.prestart,
            phases.cgroup,
            phases.spec,
            phases.runtime,
            phases.cleanup,
        ];
        for (i, d) in executor.into_iter().enumerate() {
            self.add(MOUNT + 1 + i, d);
        }
    }

    pub(crate) fn totals(&self) -> ExecPhaseTotals {
        let at = |i: usize| Duration::from_micros(self.micros[i].load(Ordering::Relaxed));
        ExecPhaseTotals {
            runs: self.runs.load(Ordering::Relaxed),
            placed_runs: self.placed_runs.load(Ordering::Relaxed),
            mount: at(MOUNT),
            executor: ExecPhases {
                bundle: at(1),
                prestart: at(2),
                cgroup: at(3),
                spec: at(4),
                runtime: at(5),
                cleanup: at(6),
            },
            commit: at(COMMIT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_each_phase_in_its_place() {
        let counters = ExecPhaseCounters::default();
        let ms = Duration::from_millis;
        counters.add_mount(ms(1));
        let run = ExecPhases {
            bundle: ms(2),
            prestart: ms(3),
            cgroup: ms(4),
            spec: ms(5),
            runtime: ms(6),
            cleanup: ms(7),
        };
        counters.add_run(&run, true);
        counters.add_run(&run, false);
        counters.add_commit(ms(8));
        let totals = counters.totals();
        assert_eq!(totals.runs, 2);
        assert_eq!(totals.placed_runs, 1);
        let named: Vec<(&str, Duration)> = totals.named().into_iter().collect();
        assert_eq!(
            named,
            vec![
                ("mount", ms(1)),
                ("bundle", ms(4)),
                ("prestart", ms(6)),
                ("cgroup", ms(8)),
                ("spec", ms(10)),
                ("runtime", ms(12)),
                ("cleanup", ms(14)),
                ("commit", ms(8)),
            ]
        );
    }
}
