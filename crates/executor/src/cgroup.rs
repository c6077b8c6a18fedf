//! Resource limits of an exec ([`ExecLimits`]: processes and memory), and which one stopped it
//! ([`LimitHit`]).
//!
//! The executor makes a cgroup of its own per exec, `dagr/<id>`, with the limits, and has the
//! runtime put the container in a child of it (`dagr/<id>/ctr`). Limits are hierarchical, so the
//! child is bound by them; and the runtime removes only the child when the container ends, so the
//! parent's event counters (`pids.events`, `memory.oom_control` / `memory.events`) still say
//! afterwards whether a limit was hit. Then the parent is removed too. cgroup v2 (a unified
//! hierarchy at `/sys/fs/cgroup`) and v1 (a hierarchy per controller, also in hybrid setups) are
//! both handled.

use std::path::{Path, PathBuf};

/// The limits every exec runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecLimits {
    /// At most this many processes and threads (a fork bomb stops here).
    pub pids: Option<u64>,
    /// At most this much memory; above it the kernel kills the exec's processes.
    pub memory_bytes: Option<u64>,
}

/// A limit an exec ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// Creating a process or thread failed at the pids limit.
    Pids { limit: u64 },
    /// The kernel killed a process at the memory limit.
    Memory { limit_bytes: u64 },
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Pids { limit } => write!(f, "pids limit reached ({limit} processes)"),
            LimitHit::Memory { limit_bytes } => {
                write!(f, "killed: out of memory (limit {limit_bytes} bytes)")
            }
        }
    }
}

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup layout of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

fn version() -> Version {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        Version::V2
    } else {
        Version::V1
    }
}

/// The parent cgroup of one exec (removed with [`ExecCgroup::remove`]).
#[derive(Debug)]
pub(crate) struct ExecCgroup {
    version: Version,
    /// The directories made: one per controller for v1, one for v2.
    dirs: Vec<PathBuf>,
    limits: ExecLimits,
    /// The cgroup path the runtime puts the container in.
    container_path: String,
    /// The exec's id (the cgroups' name).
    id: String,
    /// Processes of the launcher inside the cgroups (a placed launcher stays in them): the pids
    /// limit is raised by this much, so that the exec's own processes get the whole limit.
    launcher_pids: u64,
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The number a single-value cgroup file holds, 0 when absent.
fn read_number(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// `key N` from a flat-keyed cgroup file, 0 when absent.
fn counter(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (k, v) = line.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

impl ExecCgroup {
    /// The cgroup path of exec `id`'s container when no limit applies (no parent is made).
    pub(crate) fn plain_path(id: &str) -> String {
        format!("/dagr/{id}")
    }

    /// Makes `dagr/<id>` with `limits` (nothing when there are none: the container gets
    /// [`ExecCgroup::plain_path`]); `placed`: for a placed launcher, which stays inside (its
    /// process is not counted against the pids limit; its memory is). Blocking: call off the
    /// runtime.
    pub(crate) fn create(
        id: &str,
        limits: ExecLimits,
        placed: bool,
    ) -> std::io::Result<Option<ExecCgroup>> {
        if limits == ExecLimits::default() {
            return Ok(None);
        }
        let version = version();
        let mut cgroup = ExecCgroup {
            version,
            dirs: Vec::new(),
            limits,
            container_path: format!("/dagr/{id}/ctr"),
            id: id.to_owned(),
            launcher_pids: u64::from(placed),
        };
        let made = match version {
            Version::V2 => cgroup.create_v2(id),
            Version::V1 => cgroup.create_v1(id),
        };
        match made {
            Ok(()) => Ok(Some(cgroup)),
            Err(e) => {
                cgroup.remove();
                Err(e)
            }
        }
    }

    fn create_v2(&mut self, id: &str) -> std::io::Result<()> {
        let base = Path::new(ROOT).join("dagr");
        std::fs::create_dir_all(&base)?;
        // Controllers reach a cgroup only when every ancestor delegates them.
        let wanted: Vec<&str> = [
            self.limits.pids.map(|_| "+pids"),
            self.limits.memory_bytes.map(|_| "+memory"),
        ]
        .into_iter()
        .flatten()
        .collect();
        write(
            &Path::new(ROOT).join("cgroup.subtree_control"),
            &wanted.join(" "),
        )?;
        write(&base.join("cgroup.subtree_control"), &wanted.join(" "))?;
        let dir = base.join(id);
        std::fs::create_dir(&dir)?;
        self.dirs.push(dir.clone());
        write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))?;
        if let Some(pids) = self.limits.pids {
            write(
                &dir.join("pids.max"),
                &(pids + self.launcher_pids).to_string(),
            )?;
        }
        if let Some(bytes) = self.limits.memory_bytes {
            write(&dir.join("memory.max"), &bytes.to_string())?;
            // No swap to escape to.
            let _ = write(&dir.join("memory.swap.max"), "0");
        }
        Ok(())
    }

    fn create_v1(&mut self, id: &str) -> std::io::Result<()> {
        if let Some(pids) = self.limits.pids {
            let dir = Path::new(ROOT).join("pids/dagr").join(id);
            std::fs::create_dir_all(&dir)?;
            self.dirs.push(dir.clone());
            write(
                &dir.join("pids.max"),
                &(pids + self.launcher_pids).to_string(),
            )?;
        }
        if let Some(bytes) = self.limits.memory_bytes {
            let dir = Path::new(ROOT).join("memory/dagr").join(id);
            std::fs::create_dir_all(&dir)?;
            self.dirs.push(dir.clone());
            write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // Without swap accounting the file is missing: then there is no swap to escape to.
            let swap = dir.join("memory.memsw.limit_in_bytes");
            if swap.exists() {
                write(&swap, &bytes.to_string())?;
            }
        }
        Ok(())
    }

    /// The cgroup path the runtime puts the container in (a child of this one).
    pub(crate) fn container_path(&self) -> &str {
        &self.container_path
    }

    fn dir_of(&self, controller: &str) -> Option<&Path> {
        match self.version {
            Version::V2 => self.dirs.first().map(PathBuf::as_path),
            Version::V1 => self
                .dirs
                .iter()
                .find(|d| d.starts_with(Path::new(ROOT).join(controller)))
                .map(PathBuf::as_path),
        }
    }

    /// Which limit the exec ran into, if any: read once the container has ended, from this
    /// (parent) cgroup, which outlives the container's. `killed`: the exec died of SIGKILL (as
    /// the kernel's OOM killer ends it).
    ///
    /// Where the kernel records an event differs: v2 counts a descendant's OOM kills in the
    /// parent's `memory.events`; v1 records the kill in the container's own cgroup (gone by
    /// now); the parent shows it as failed charges (`memory.failcnt`) or, when memory and swap
    /// are limited together, as a peak usage at the limit (`memory.max_usage_in_bytes`): a
    /// SIGKILLed exec whose usage peaked at the limit was killed by it.
    /// A failed fork is counted where it happened (the container's cgroup), so the parent's
    /// `pids.peak` reaching the limit is the sign, with `pids.events` where it is hierarchical.
    pub(crate) fn limit_hit(&self, killed: bool) -> Option<LimitHit> {
        if let (Some(limit_bytes), Some(dir)) = (self.limits.memory_bytes, self.dir_of("memory")) {
            let hit = match self.version {
                Version::V2 => counter(&dir.join("memory.events"), "oom_kill") > 0,
                Version::V1 => {
                    killed
                        && (read_number(&dir.join("memory.failcnt")) > 0
                            || read_number(&dir.join("memory.memsw.failcnt")) > 0
                            || read_number(&dir.join("memory.max_usage_in_bytes")) >= limit_bytes
                            || read_number(&dir.join("memory.memsw.max_usage_in_bytes"))
                                >= limit_bytes)
                }
            };
            if hit {
                return Some(LimitHit::Memory { limit_bytes });
            }
        }
        if let (Some(limit), Some(dir)) = (self.limits.pids, self.dir_of("pids"))
            && (counter(&dir.join("pids.events"), "max") > 0
                || read_number(&dir.join("pids.peak")) >= limit + self.launcher_pids)
        {
            return Some(LimitHit::Pids { limit });
        }
        None
    }

    /// Removes the parent cgroup(s) once the runtime has removed the container's (see
    /// [`remove_exec_cgroups`]). Blocking.
    pub(crate) fn remove(&self) {
        remove_exec_cgroups(&self.id);
    }
}

/// The cgroup path exec `id`'s container runs in: a child of its cgroup with limits, or the
/// plain path when there are none.
pub(crate) fn container_cgroup_path(id: &str, cgroup: Option<&ExecCgroup>) -> String {
    match cgroup {
        Some(cgroup) => cgroup.container_path().to_owned(),
        None => ExecCgroup::plain_path(id),
    }
}

/// Removes what is left of exec `id`'s cgroups in every hierarchy (v1: one per controller, the
/// runtime made the path in each; v2: the unified one): the container's child first (a runtime
/// that died leaves it), then the parent. A cgroup that still has processes stays. Returns
/// whether nothing is left. Blocking. The engine calls it for its own execs only: for the one
/// that ends, for the stale ones of a dead predecessor (their bundles name them) and, in its
/// watchdog, for the containers it killed.
pub fn remove_exec_cgroups(id: &str) -> bool {
    let mut left = false;
    let hierarchies = std::fs::read_dir(ROOT)
        .map(|entries| entries.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    // v2 keeps `dagr` at the root; v1 one level down, per controller.
    for base in std::iter::once(PathBuf::from(ROOT)).chain(hierarchies) {
        let dir = base.join("dagr").join(id);
        if !dir.is_dir() {
            continue;
        }
        let _ = std::fs::remove_dir(dir.join("ctr"));
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                left = true;
                tracing::debug!(cgroup = %dir.display(), error = %e, "an exec's cgroup stays");
            }
        }
    }
    !left
}
