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
//!   its stdin closes with the engine). The launcher's log is in the marker (it exists before
//!   the bundle does). A marker whose cgroups could not be removed stays.
//! - Once in its cgroups a launcher writes one byte to its stdout; the exec reads it before
//!   sending the start byte, so a launcher that failed (its stdout ends first) is never taken
//!   for a container that failed, and the exec starts its launcher the usual way.
//! - An unused one is ended by closing its stdin (it exits without starting anything), then
//!   its cgroups and marker are removed: on [`PlacedLaunchers::drain`] and on drop, which
//!   blocks (the pool drops them on blocking threads).
//! - The pool never holds more than its depth: ready and starting launchers are counted under
//!   one lock (refilled in the background once an exec's container has ended). An exec that
//!   finds it empty places a launcher for itself, whose move into the cgroups then overlaps
//!   the exec's bundle preparation; only terminals (whose stdio is a pty made for the run) and
//!   runtimes other than dagr-launcher start their launcher with the bundle ready.
//! - A placed launcher stays in its exec's cgroups: the pids limit is one more than the exec's
//!   (see [`ExecCgroup::create`]), and its memory (a few MiB) counts against the exec's.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::cgroup::{ExecCgroup, ExecLimits, container_cgroup_path, remove_exec_cgroups};
use crate::executor::LiveExec;
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
    /// For a launcher placed for an exec: the exec counts as live until it is taken or
    /// retired (declared last: dropped after the retirement in `Drop`).
    live: Option<LiveExec>,
}

/// What an exec takes over from a [`PlacedLauncher`]: from then on its cleanup ends the
/// process and removes the cgroups and the marker.
#[derive(Debug)]
pub(crate) struct TakenLauncher {
    pub(crate) id: String,
    pub(crate) child: Child,
    pub(crate) cgroup: Option<Arc<ExecCgroup>>,
    /// `placed/<id>`, which holds the launcher's log ([`LOG_FILE`]).
    pub(crate) marker: PathBuf,
}

/// The launcher's log (its errors as JSON lines), in its marker.
pub(crate) const LOG_FILE: &str = "runc.log";

const RETIRE_GRACE: Duration = Duration::from_secs(2);

impl PlacedLauncher {
    /// Hands the launcher to an exec.
    fn take(mut self) -> Option<TakenLauncher> {
        self.live = None;
        let child = self.child.take()?;
        let marker = self.marker.take()?;
        Some(TakenLauncher {
            id: std::mem::take(&mut self.id),
            child,
            cgroup: self.cgroup.take(),
            marker,
        })
    }

    fn is_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Blocking: ends an unused launcher (its stdin closes, it exits; killed when it does not
    /// within a grace period), then removes its cgroups and marker.
    fn retire(&mut self) {
        let Some(marker) = self.marker.take() else {
            return;
        };
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let mut deadline = Instant::now() + RETIRE_GRACE;
            let mut killed = false;
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    if killed {
                        tracing::warn!(exec = %self.id, "a placed launcher outlived its kill");
                        break;
                    }
                    let _ = child.start_kill();
                    killed = true;
                    deadline = Instant::now() + RETIRE_GRACE;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        remove_placed(&self.id, &marker);
    }
}

impl Drop for PlacedLauncher {
    /// An unused launcher goes with its cgroups. This blocks for the launcher's exit (about a
    /// millisecond once its stdin closes): the pool drops them on blocking threads, and the
    /// executor's own drop does it in place, so that nothing outlives a process that exits
    /// right after.
    fn drop(&mut self) {
        self.retire();
    }
}

/// Drops `launchers` on a blocking thread (each drop waits for its process to exit).
fn retire_off_thread(launchers: Vec<PlacedLauncher>) {
    if launchers.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn_blocking(move || drop(launchers))),
        Err(_) => drop(launchers),
    }
}

/// Blocking: removes a placed launcher's cgroups (retrying briefly while its last process
/// exits), then its marker; whether both are gone. A marker whose cgroups stay is kept, so
/// that a later stale-state sweep finds them.
pub(crate) fn remove_placed(id: &str, marker: &Path) -> bool {
    let deadline = Instant::now() + RETIRE_GRACE;
    loop {
        if remove_exec_cgroups(id) {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(exec = %id, marker = %marker.display(), "a placed launcher's cgroups could not be removed; its marker stays");
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    match std::fs::remove_dir_all(marker) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(exec = %id, marker = %marker.display(), error = %e, "removing a placed launcher's marker failed");
            false
        }
    }
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
    pool: Mutex<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    ready: VecDeque<PlacedLauncher>,
    /// Launchers being started for the pool (counted against the depth).
    starting: usize,
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
            pool: Mutex::new(Pool::default()),
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The oldest placed launcher still waiting, if any. Those that died meanwhile are
    /// retired on a blocking thread.
    pub(crate) fn take(&self) -> Option<TakenLauncher> {
        let mut dead = Vec::new();
        let taken = loop {
            let Some(mut launcher) = self.pool().ready.pop_front() else {
                break None;
            };
            if launcher.is_alive() {
                break launcher.take();
            }
            tracing::debug!(exec = %launcher.id, "a placed launcher ended before its exec");
            dead.push(launcher);
        };
        retire_off_thread(dead);
        taken
    }

    /// Starts a placed launcher for an exec that found the pool empty: its move into the
    /// cgroups then overlaps the exec's bundle preparation. `None` (logged) when it cannot be
    /// started: the exec starts its launcher the usual way.
    pub(crate) async fn start_for_exec(&self, live: LiveExec) -> Option<TakenLauncher> {
        match self.place(Some(live)).await {
            Ok(launcher) => launcher.take(),
            Err(e) => {
                tracing::warn!(error = %e, "starting a placed launcher failed");
                None
            }
        }
    }

    /// How many launchers to start to bring the pool to its depth; they count as starting
    /// until [`PlacedLaunchers::start_one`] ends.
    pub(crate) fn reserve_refill(&self) -> usize {
        let mut pool = self.pool();
        let reserved = self.depth.saturating_sub(pool.ready.len() + pool.starting);
        pool.starting += reserved;
        reserved
    }

    /// Starts one placed launcher (one reserved by [`PlacedLaunchers::reserve_refill`]) and adds
    /// it to the pool; a failure is logged (execs then start their launcher the usual way).
    pub(crate) async fn start_one(self: Arc<Self>) {
        let started = self.place(None).await;
        let mut pool = self.pool();
        pool.starting -= 1;
        match started {
            Ok(launcher) => pool.ready.push_back(launcher),
            Err(e) => tracing::warn!(error = %e, "starting a placed launcher failed"),
        }
    }

    /// Makes a launcher's marker and cgroups and starts it; `live` is kept until the launcher
    /// is taken or retired.
    async fn place(&self, live: Option<LiveExec>) -> std::io::Result<PlacedLauncher> {
        let id = format!("dagr-{:016x}", rand::random::<u64>());
        let marker = self.markers.join(&id);
        let limits = self.limits;
        let placed_id = id.clone();
        // The launcher is built on the blocking thread: if this future is dropped meanwhile,
        // the task's output is dropped there and its drop removes the cgroup and marker.
        let mut launcher = tokio::task::spawn_blocking(move || {
            if let Some(dir) = marker.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::create_dir(&marker)?;
            let mut launcher = PlacedLauncher {
                id: placed_id,
                child: None,
                cgroup: None,
                marker: Some(marker),
                live,
            };
            launcher.cgroup = ExecCgroup::create(&launcher.id, limits, true)?.map(Arc::new);
            Ok::<_, std::io::Error>(launcher)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let bundle = self.bundles.join(&id);
        let cgroups_path = container_cgroup_path(&id, launcher.cgroup.as_deref());
        let mut command = self.runtime.run_command(
            &bundle,
            &id,
            &bundle.join("init.pid"),
            &self.markers.join(&id).join(LOG_FILE),
            Some(&cgroups_path),
        );
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match command.spawn() {
            Ok(child) => {
                launcher.child = Some(child);
                Ok(launcher)
            }
            Err(e) => {
                retire_off_thread(vec![launcher]);
                Err(e)
            }
        }
    }

    /// Ends every waiting launcher and removes its cgroups; whether there was any.
    pub(crate) async fn drain(&self) -> bool {
        let drained: Vec<PlacedLauncher> = self.pool().ready.drain(..).collect();
        if drained.is_empty() {
            return false;
        }
        let _ = tokio::task::spawn_blocking(move || drop(drained)).await;
        true
    }
}
