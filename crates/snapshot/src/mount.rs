//! [`Mount`]: how to mount a snapshot (`overlay` or `bind`, containerd's shape), and helpers that
//! perform it through a small syscall seam, [`MountSyscalls`] (real implementation: [`LinuxMounts`]).
//!
//! [`mount_all`] returns a [`MountGuard`] that unmounts (in reverse order) on drop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest mount data string the kernel accepts with mount(2) (one page, with its NUL). Longer
/// overlay options are passed one by one through the new mount API (`fsopen`/`fsconfig`, with
/// `lowerdir+` per layer: Linux 6.8 or later).
pub const MAX_MOUNT_DATA: usize = 4095;

/// Errors mounting or unmounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount of {kind} {source_path} on {target} failed: {error}")]
    Mount {
        kind: &'static str,
        source_path: PathBuf,
        target: PathBuf,
        error: std::io::Error,
    },
    #[error("unmount of {target} failed: {error}")]
    Unmount {
        target: PathBuf,
        error: std::io::Error,
    },
    #[error("unsupported mount option {option:?} for {kind} mount on {target}")]
    UnsupportedOption {
        kind: &'static str,
        option: String,
        target: PathBuf,
    },
}

/// The filesystem type of a [`Mount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// overlayfs; `options` carry `lowerdir=`, `upperdir=`, `workdir=`.
    Overlay,
    /// A bind mount of `source`; options `ro`/`rw`, `rbind`.
    Bind,
}

impl MountKind {
    /// `"overlay"` or `"bind"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Overlay => "overlay",
            MountKind::Bind => "bind",
        }
    }
}

/// One mount to perform on a target directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    /// For `bind`, the directory to bind; for `overlay`, the literal `overlay`.
    pub source: PathBuf,
    pub options: Vec<String>,
}

impl Mount {
    /// Whether this mount is read-only.
    pub fn is_read_only(&self) -> bool {
        match self.kind {
            MountKind::Bind => self.options.iter().any(|o| o == "ro"),
            // An overlay without an upper dir is read-only by construction.
            MountKind::Overlay => {
                self.options.iter().any(|o| o == "ro")
                    || !self.options.iter().any(|o| o.starts_with("upperdir="))
            }
        }
    }

    /// Mounts this on `target` (an existing directory).
    pub fn mount_on(&self, target: &Path, sys: &dyn MountSyscalls) -> Result<(), MountError> {
        let mount_err = |error| MountError::Mount {
            kind: self.kind.as_str(),
            source_path: self.source.clone(),
            target: target.to_owned(),
            error,
        };
        match self.kind {
            MountKind::Overlay => {
                let mut read_only = false;
                let mut data = Vec::new();
                for o in &self.options {
                    match o.as_str() {
                        "ro" => read_only = true,
                        "rw" => {}
                        _ => data.push(o.as_str()),
                    }
                }
                if data.contains(&crate::snapshotter::OVERLAY_VOLATILE) {
                    clear_volatile_mark(&data);
                }
                let data = data.join(",");
                sys.mount_overlay(target, &data, read_only)
                    .map_err(mount_err)
            }
            MountKind::Bind => {
                let mut read_only = false;
                let mut recursive = false;
                for o in &self.options {
                    match o.as_str() {
                        "ro" => read_only = true,
                        "rw" | "bind" => {}
                        "rbind" => recursive = true,
                        other => {
                            return Err(MountError::UnsupportedOption {
                                kind: "bind",
                                option: other.to_owned(),
                                target: target.to_owned(),
                            });
                        }
                    }
                }
                sys.bind(&self.source, target, recursive)
                    .map_err(mount_err)?;
                if read_only && let Err(e) = sys.remount_read_only(target) {
                    let _ = sys.unmount(target, true);
                    return Err(mount_err(e));
                }
                Ok(())
            }
        }
    }
}

/// Removes the mark a previous `volatile` mount of the same upper and work dirs left
/// (`<workdir>/work/incompat/volatile`), without which the kernel refuses to mount them again.
/// Only the snapshotter hands out volatile mounts, of active snapshots, which never outlive the
/// process (recovery removes them): a mark found here is one of this process's mounts, which
/// was unmounted cleanly, not the sign of a crash the kernel means it to be.
fn clear_volatile_mark(data: &[&str]) {
    let Some(work) = data.iter().find_map(|o| o.strip_prefix("workdir=")) else {
        return;
    };
    let mark = Path::new(work).join("work/incompat/volatile");
    match std::fs::remove_dir_all(&mark) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %mark.display(), error = %e, "clearing a volatile overlay's mark");
        }
        _ => {}
    }
}

/// The syscalls the mount helpers need; a seam so the option handling can be tested without root.
pub trait MountSyscalls: Send + Sync + std::fmt::Debug {
    /// `mount("overlay", target, "overlay", ro ? MS_RDONLY : 0, data)`.
    fn mount_overlay(&self, target: &Path, data: &str, read_only: bool) -> std::io::Result<()>;
    /// `mount(source, target, NULL, MS_BIND [| MS_REC], NULL)`.
    fn bind(&self, source: &Path, target: &Path, recursive: bool) -> std::io::Result<()>;
    /// `mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL)`.
    fn remount_read_only(&self, target: &Path) -> std::io::Result<()>;
    /// `umount2(target, detach ? MNT_DETACH : 0)`.
    fn unmount(&self, target: &Path, detach: bool) -> std::io::Result<()>;
}

/// How often an unmount that finds the mount busy is retried, and how long apart.
const BUSY_RETRIES: u32 = 50;
const BUSY_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

/// The real Linux mount syscalls (rustix).
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxMounts;

impl MountSyscalls for LinuxMounts {
    fn mount_overlay(&self, target: &Path, data: &str, read_only: bool) -> std::io::Result<()> {
        use rustix::mount::MountFlags;
        let flags = if read_only {
            MountFlags::RDONLY
        } else {
            MountFlags::empty()
        };
        if data.len() > MAX_MOUNT_DATA {
            return mount_overlay_fsconfig(target, data, read_only);
        }
        let data = std::ffi::CString::new(data)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        rustix::mount::mount("overlay", target, "overlay", flags, Some(data.as_c_str()))?;
        Ok(())
    }

    fn bind(&self, source: &Path, target: &Path, recursive: bool) -> std::io::Result<()> {
        if recursive {
            rustix::mount::mount_bind_recursive(source, target)?;
        } else {
            rustix::mount::mount_bind(source, target)?;
        }
        Ok(())
    }

    fn remount_read_only(&self, target: &Path) -> std::io::Result<()> {
        use rustix::mount::MountFlags;
        rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")?;
        Ok(())
    }

    fn unmount(&self, target: &Path, detach: bool) -> std::io::Result<()> {
        use rustix::mount::UnmountFlags;
        let flags = if detach {
            UnmountFlags::DETACH
        } else {
            UnmountFlags::empty()
        };
        rustix::mount::unmount(target, flags)?;
        Ok(())
    }
}

/// Overlay through the new mount API: no one-page limit on the options, one `lowerdir+` per layer.
fn mount_overlay_fsconfig(target: &Path, data: &str, read_only: bool) -> std::io::Result<()> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
        fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for option in data.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("lowerdir", dirs)) => {
                for dir in dirs.split(':') {
                    fsconfig_set_string(&fs, "lowerdir+", dir)?;
                }
            }
            Some((key, value)) => fsconfig_set_string(&fs, key, value)?,
            None => fsconfig_set_flag(&fs, option)?,
        }
    }
    if read_only {
        fsconfig_set_flag(&fs, "ro")?;
    }
    fsconfig_create(&fs)?;
    let attrs = if read_only {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Mounts stacked on one target; unmounted in reverse order on drop (lazily if busy).
#[derive(Debug)]
#[must_use = "dropping the guard unmounts"]
pub struct MountGuard {
    target: PathBuf,
    mounted: usize,
    sys: Arc<dyn MountSyscalls>,
}

impl MountGuard {
    /// The directory the mounts are on.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts now, reporting failure (what is left is then detached).
    pub fn unmount(mut self) -> Result<(), MountError> {
        let result = self.unmount_inner(false);
        if result.is_err()
            && let Err(e) = self.unmount_inner(true)
        {
            tracing::warn!(target = %self.target.display(), error = %e, "could not unmount");
        }
        self.mounted = 0;
        result
    }

    fn unmount_inner(&mut self, detach: bool) -> Result<(), MountError> {
        while self.mounted > 0 {
            let mut attempt = 0;
            loop {
                match self.sys.unmount(&self.target, detach) {
                    Ok(()) => break,
                    // A process forked elsewhere in this program holds copies of our
                    // descriptors (close-on-exec ones too) until it executes: busy for a moment.
                    Err(error)
                        if error.raw_os_error() == Some(libc::EBUSY) && attempt < BUSY_RETRIES =>
                    {
                        attempt += 1;
                        std::thread::sleep(BUSY_RETRY_DELAY);
                    }
                    Err(error) => {
                        return Err(MountError::Unmount {
                            target: self.target.clone(),
                            error,
                        });
                    }
                }
            }
            self.mounted -= 1;
        }
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.unmount_inner(false).is_err()
            && let Err(e) = self.unmount_inner(true)
        {
            tracing::warn!(target = %self.target.display(), error = %e, "could not unmount");
        }
    }
}

/// Mounts `mounts` in order on `target` (an existing directory).
pub fn mount_all(
    mounts: &[Mount],
    target: &Path,
    sys: Arc<dyn MountSyscalls>,
) -> Result<MountGuard, MountError> {
    let mut guard = MountGuard {
        target: target.to_owned(),
        mounted: 0,
        sys,
    };
    for m in mounts {
        m.mount_on(target, &*guard.sys)?;
        guard.mounted += 1;
    }
    Ok(guard)
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo`, deepest first.
pub fn mounts_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    Ok(out)
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records calls; the seam lets us check option translation without root.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>, bool);

    impl MountSyscalls for Recorder {
        fn mount_overlay(&self, target: &Path, data: &str, ro: bool) -> std::io::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("overlay {} {data} ro={ro}", target.display()));
            Ok(())
        }
        fn bind(&self, source: &Path, target: &Path, rec: bool) -> std::io::Result<()> {
            self.0.lock().unwrap().push(format!(
                "bind {} {} rec={rec}",
                source.display(),
                target.display()
            ));
            Ok(())
        }
        fn remount_read_only(&self, target: &Path) -> std::io::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("remount-ro {}", target.display()));
            if self.1 {
                Err(std::io::Error::from_raw_os_error(libc::EPERM))
            } else {
                Ok(())
            }
        }
        fn unmount(&self, target: &Path, detach: bool) -> std::io::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("umount {} detach={detach}", target.display()));
            Ok(())
        }
    }

    #[test]
    fn read_only_bind_is_two_steps_and_guard_unmounts() {
        let rec = Arc::new(Recorder::default());
        let m = Mount {
            kind: MountKind::Bind,
            source: "/s".into(),
            options: vec!["ro".into(), "rbind".into()],
        };
        assert!(m.is_read_only());
        let g = mount_all(&[m], Path::new("/t"), rec.clone()).unwrap();
        drop(g);
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![
                "bind /s /t rec=true",
                "remount-ro /t",
                "umount /t detach=false"
            ]
        );
    }

    #[test]
    fn failed_read_only_remount_undoes_the_bind() {
        let rec = Arc::new(Recorder(Mutex::default(), true));
        let m = Mount {
            kind: MountKind::Bind,
            source: "/s".into(),
            options: vec!["ro".into()],
        };
        let err = mount_all(&[m], Path::new("/t"), rec.clone()).unwrap_err();
        assert!(err.to_string().contains("/t"), "{err}");
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![
                "bind /s /t rec=false",
                "remount-ro /t",
                "umount /t detach=true"
            ]
        );
    }

    #[test]
    fn overlay_options_become_data_and_long_data_is_refused() {
        let rec = Arc::new(Recorder::default());
        let m = Mount {
            kind: MountKind::Overlay,
            source: "overlay".into(),
            options: vec!["lowerdir=/a:/b".into(), "ro".into()],
        };
        assert!(m.is_read_only());
        m.mount_on(Path::new("/t"), &*rec).unwrap();
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec!["overlay /t lowerdir=/a:/b ro=true"]
        );
        let bad = Mount {
            kind: MountKind::Bind,
            source: "/s".into(),
            options: vec!["suid".into()],
        };
        assert!(matches!(
            bad.mount_on(Path::new("/t"), &*rec),
            Err(MountError::UnsupportedOption { .. })
        ));
    }

    /// Binds succeed; the first `busy` unmounts fail with EBUSY.
    #[derive(Debug)]
    struct BusyAtFirst {
        busy: Mutex<u32>,
        calls: Mutex<Vec<bool>>,
    }

    impl MountSyscalls for BusyAtFirst {
        fn mount_overlay(&self, _: &Path, _: &str, _: bool) -> std::io::Result<()> {
            Ok(())
        }
        fn bind(&self, _: &Path, _: &Path, _: bool) -> std::io::Result<()> {
            Ok(())
        }
        fn remount_read_only(&self, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn unmount(&self, _: &Path, detach: bool) -> std::io::Result<()> {
            self.calls.lock().unwrap().push(detach);
            let mut busy = self.busy.lock().unwrap();
            if *busy > 0 && !detach {
                *busy -= 1;
                return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
            }
            Ok(())
        }
    }

    #[test]
    fn a_briefly_busy_mount_is_retried_and_a_lasting_one_reported() {
        let bind = Mount {
            kind: MountKind::Bind,
            source: "/s".into(),
            options: vec![],
        };
        let brief = Arc::new(BusyAtFirst {
            busy: Mutex::new(3),
            calls: Mutex::default(),
        });
        let guard = mount_all(std::slice::from_ref(&bind), Path::new("/t"), brief.clone()).unwrap();
        guard.unmount().unwrap();
        assert_eq!(*brief.calls.lock().unwrap(), vec![false; 4]);

        let lasting = Arc::new(BusyAtFirst {
            busy: Mutex::new(u32::MAX),
            calls: Mutex::default(),
        });
        let guard = mount_all(&[bind], Path::new("/t"), lasting.clone()).unwrap();
        let err = guard.unmount().unwrap_err();
        assert!(err.to_string().contains("/t"), "{err}");
        // Retried, reported, then detached.
        let calls = lasting.calls.lock().unwrap();
        assert_eq!(calls.len(), BUSY_RETRIES as usize + 2);
        assert_eq!(calls.last(), Some(&true));
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
