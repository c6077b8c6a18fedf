//! Launchers started ahead of their execs ([`PlacedLaunchers`]), for runtimes that can wait
//! in their container's cgroups (`dagr-launcher run --wait-in-cgroup`).
//!
//! Moving a process into a cgroup waits for an RCU grace period on cgroup v1 (a median of
//! about 10 ms on the development machine, more than the rest of a container's start). A
//! placed launcher has made that move before its exec is asked for: the executor creates the
//! exec's cgroup with its limits, starts the launcher with its stdio pipes, and the launcher
//! moves itself into the container's cgroup and waits for a start byte on stdin. An exec that
//! takes it writes its bundle and sends the byte; the container's init is then born in its
//! cgroups. The exec's id is the placed launcher's, chosen when it was started.
//!
//! Invariants:
//! - Every placed launcher has a marker `placed/<id>` in the executor's state directory from
//!   before its cgroup exists until its cgroup is gone, so that the stale-state sweep of a
//!   later engine removes the cgroups of one that died with its engine (it ends by itself:
//!   its stdin closes with the engine).
//! - An unused one is ended by closing its stdin (it exits without starting anything), then
//!   its cgroups and marker are removed: on [`PlacedLaunchers::drain`] and on drop.
//! - The pool never holds more than its depth (refilled in the background once an exec's
//!   container has ended). An exec that finds it empty places a launcher for itself, whose
//!   move into the cgroups then overlaps the exec's bundle preparation; only terminals (whose
//!   stdio is a pty made for the run) and runtimes other than dagr-launcher start their
//!   launcher with the bundle ready.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::cgroup::{ExecCgroup, ExecLimits, container_cgroup_path, remove_exec_cgroups};
use crate::runtime::Runtime;

/// A launcher waiting in its exec's cgroups for the start byte.
#[derive(Debug)]
pub(crate) struct PlacedLauncher {
    /// The exec id it will run as.
    pub(crate) id: String,
    /// The launcher process (stdin, stdout and stderr piped).
    child: Option<Child>,
    /// The exec's cgroup with its limits (none when there are no limits).
    cgroup: Option<Arc<ExecCgroup>>,
    /// `placed/<id>`; `None` once an exec took the launcher.
    marker: Option<PathBuf>,
}

/// What an exec takes over from a [`PlacedLauncher`]: from then on its cleanup ends the
/// process and removes the cgroups and the marker.
#[derive(Debug)]
pub(crate) struct TakenLauncher {
    pub(crate) id: String,
    pub(crate) child: Child,
    pub(crate) cgroup: Option<Arc<ExecCgroup>>,
    pub(crate) marker: PathBuf,
}

impl PlacedLauncher {
    /// Hands the launcher to an exec.
    fn take(mut self) -> Option<TakenLauncher> {
        let child = self.child.take()?;
        let marker = self.marker.take()?;
        Some(TakenLauncher {
            id: std::mem::take(&mut self.id),
            child,
            cgroup: self.cgroup.take(),
            marker,
        })
    }

    /// Blocking: ends an unused launcher (its stdin closes, it exits), then removes its
    /// cgroups and marker.
    fn retire(&mut self) {
        let Some(marker) = self.marker.take() else {
            return;
        };
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    let _ = child.start_kill();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        remove_placed(&self.id, &marker);
    }
}

impl Drop for PlacedLauncher {
    /// An unused launcher goes with its cgroups. This blocks for the launcher's exit (about a
    /// millisecond once its stdin closes): it happens when the executor is dropped, and doing
    /// it in place (not on a thread) means nothing outlives a process that exits right after.
    fn drop(&mut self) {
        self.retire();
    }
}

/// Removes a placed launcher's cgroups (retrying briefly while its last process exits), then
/// its marker.
pub(crate) fn remove_placed(id: &str, marker: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !remove_exec_cgroups(id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = std::fs::remove_dir(marker);
}

/// The pool of placed launchers of one executor.
#[derive(Debug)]
pub(crate) struct PlacedLaunchers {
    depth: usize,
    runtime: Runtime,
    limits: ExecLimits,
    /// `placed/` in the executor's state directory.
    markers: PathBuf,
    bundles: PathBuf,
    ready: Mutex<VecDeque<PlacedLauncher>>,
    /// Launchers being started (counted against the depth).
    starting: AtomicUsize,
}

impl PlacedLaunchers {
    pub(crate) fn new(
        depth: usize,
        runtime: Runtime,
        limits: ExecLimits,
        markers: PathBuf,
        bundles: PathBuf,
    ) -> Self {
        PlacedLaunchers {
            depth,
            runtime,
            limits,
            markers,
            bundles,
            ready: Mutex::new(VecDeque::new()),
            starting: AtomicUsize::new(0),
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, VecDeque<PlacedLauncher>> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The oldest placed launcher still waiting, if any. One that died meanwhile is dropped.
    pub(crate) fn take(&self) -> Option<TakenLauncher> {
        loop {
            let mut launcher = self.ready().pop_front()?;
            let alive = launcher
                .child
                .as_mut()
                .is_some_and(|child| matches!(child.try_wait(), Ok(None)));
            if alive {
                return launcher.take();
            }
            tracing::debug!(exec = %launcher.id, "a placed launcher ended before its exec");
        }
    }

    /// Starts a placed launcher for an exec that found the pool empty: its move into the
    /// cgroups then overlaps the exec's bundle preparation. `None` (logged) when it cannot be
    /// started: the exec starts its launcher the usual way.
    pub(crate) async fn start_for_exec(&self) -> Option<TakenLauncher> {
        match self.place().await {
            Ok(launcher) => launcher.take(),
            Err(e) => {
                tracing::warn!(error = %e, "starting a placed launcher failed");
                None
            }
        }
    }

    /// How many launchers to start to bring the pool to its depth; they count as starting.
    pub(crate) fn reserve_refill(&self) -> usize {
        let ready = self.ready().len();
        let mut reserved = 0;
        while ready + self.starting.load(Ordering::Acquire) < self.depth {
            self.starting.fetch_add(1, Ordering::AcqRel);
            reserved += 1;
        }
        reserved
    }

    /// Starts one placed launcher (one reserved by [`PlacedLaunchers::reserve_refill`]) and adds
    /// it to the pool; a failure is logged (execs then start their launcher the usual way).
    pub(crate) async fn start_one(self: Arc<Self>) {
        let started = self.place().await;
        self.starting.fetch_sub(1, Ordering::AcqRel);
        match started {
            Ok(launcher) => self.ready().push_back(launcher),
            Err(e) => tracing::warn!(error = %e, "starting a placed launcher failed"),
        }
    }

    async fn place(&self) -> std::io::Result<PlacedLauncher> {
        let id = format!("dagr-{:016x}", rand::random::<u64>());
        let marker = self.markers.join(&id);
        let limits = self.limits;
        let (cgroup_id, cgroup_marker) = (id.clone(), marker.clone());
        let cgroup = tokio::task::spawn_blocking(move || {
            if let Some(dir) = cgroup_marker.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::create_dir(&cgroup_marker)?;
            match ExecCgroup::create(&cgroup_id, limits) {
                Ok(cgroup) => Ok(cgroup.map(Arc::new)),
                Err(e) => {
                    let _ = std::fs::remove_dir(&cgroup_marker);
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let mut launcher = PlacedLauncher {
            id: id.clone(),
            child: None,
            cgroup,
            marker: Some(marker),
        };
        let bundle = self.bundles.join(&id);
        let cgroups_path = container_cgroup_path(&id, launcher.cgroup.as_deref());
        let mut command = self.runtime.run_command(
            &bundle,
            &id,
            &bundle.join("init.pid"),
            &bundle.join("runc.log"),
            Some(&cgroups_path),
        );
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // On failure, dropping `launcher` removes the cgroup and the marker.
        launcher.child = Some(command.spawn()?);
        Ok(launcher)
    }

    /// Ends every waiting launcher and removes its cgroups; whether there was any.
    pub(crate) async fn drain(&self) -> bool {
        let drained: Vec<PlacedLauncher> = self.ready().drain(..).collect();
        if drained.is_empty() {
            return false;
        }
        let _ = tokio::task::spawn_blocking(move || drop(drained)).await;
        true
    }
}
