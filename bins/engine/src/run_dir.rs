//! `<state dir>/run`: a tmpfs for what the engine's processes write and delete at every container
//! start and exit and no reboot needs: the OCI runtime's container state (`runtime/`, its
//! `--root`) and the bundles (`bundles/`; see `ExecutorConfig::run_dir`). On
//! the state directory's disk each such file costs a journal transaction on the exec's path; in
//! memory it costs nothing. A previous engine's tmpfs still mounted (it died) is kept: the worker
//! reads its containers' state there to remove them. A clean shutdown unmounts it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The directory under `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

/// Mounts the tmpfs on [`path`] unless one is there already; returns the path.
pub fn mount(state_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = path(state_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
    if is_mount_point(&dir)? {
        return Ok(dir);
    }
    rustix::mount::mount(
        "dagr-run",
        &dir,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        Some(c"mode=0700,size=64m"),
    )
    .with_context(|| format!("mounting a tmpfs on {}", dir.display()))?;
    Ok(dir)
}

/// Unmounts the tmpfs on [`path`] (lazily: nothing may hold it at shutdown, but nothing waits
/// if something does).
pub fn unmount(state_dir: &Path) {
    let dir = path(state_dir);
    if let Err(e) = rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::DETACH) {
        tracing::warn!(path = %dir.display(), error = %e, "unmounting the run directory");
    }
}

/// Whether `dir` is the root of a filesystem other than its parent's (a tmpfs mounted on it).
fn is_mount_point(dir: &Path) -> anyhow::Result<bool> {
    let parent = dir.parent().unwrap_or(dir);
    let (here, above) = (
        rustix::fs::stat(dir).with_context(|| format!("stat {}", dir.display()))?,
        rustix::fs::stat(parent).with_context(|| format!("stat {}", parent.display()))?,
    );
    Ok(here.st_dev != above.st_dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root only (a tmpfs is mounted), as the engine itself.
    #[test]
    fn a_tmpfs_is_mounted_once_and_found_again() {
        let state = tempfile::tempdir().expect("tmp");
        let dir = mount(state.path()).expect("mount");
        assert!(is_mount_point(&dir).expect("stat"));
        std::fs::write(dir.join("kept"), b"x").expect("write");
        // A second start finds the first one's tmpfs (a dead engine's) and keeps it.
        assert_eq!(mount(state.path()).expect("again"), dir);
        assert!(dir.join("kept").exists());
        unmount(state.path());
        assert!(!is_mount_point(&dir).expect("stat"));
        assert!(!dir.join("kept").exists());
    }
}
