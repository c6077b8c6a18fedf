//! Host-side mounts: the containerd-style [`Mount`] description and the [`MountOps`] syscall seam
//! that applies it ([`SyscallMountOps`] is the real implementation, through rustix).

use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// One mount as containerd describes it: `kind` is the filesystem type (`"overlay"`, `"bind"`,
/// `"tmpfs"`...), `source` its source, `options` the `mount(8)`-style options (flags such as `ro`
/// or `rbind` and filesystem data such as `lowerdir=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Filesystem type, e.g. `"overlay"` or `"bind"`.
    pub kind: String,
    /// Mount source (a path for binds, a free label such as `"overlay"` otherwise).
    pub source: String,
    /// `mount(8)`-style options.
    pub options: Vec<String>,
}

impl Mount {
    /// Whether this mount is a bind mount (by type or by a `bind`/`rbind` option).
    pub fn is_bind(&self) -> bool {
        self.kind == "bind" || self.options.iter().any(|o| o == "bind" || o == "rbind")
    }

    /// Whether this mount asks to be read-only.
    pub fn is_readonly(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// Errors of applying or removing host mounts.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// `mount(2)` failed.
    #[error("mount {kind} {mount_source} on {}: {source}", target.display())]
    Mount {
        /// Filesystem type that was mounted.
        kind: String,
        /// Source of the mount.
        mount_source: String,
        /// Where it was mounted.
        target: PathBuf,
        /// The system error.
        source: std::io::Error,
    },
    /// `umount2(2)` failed.
    #[error("unmount {}: {source}", target.display())]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The system error.
        source: std::io::Error,
    },
    /// The filesystem data of a mount contains a NUL byte.
    #[error("mount options for {} contain a nul byte", target.display())]
    InvalidOptions {
        /// The mount point.
        target: PathBuf,
    },
}

/// The mount syscalls the executor needs. The real implementation is [`SyscallMountOps`]; the
/// seam exists so bundle preparation can be exercised without privileges.
pub trait MountOps: Send + Sync + fmt::Debug {
    /// Applies `mount` on `target` (an existing directory or file).
    fn mount(&self, mount: &Mount, target: &Path) -> Result<(), MountError>;
    /// Removes the mount at `target` (lazily: a busy mount is detached).
    fn unmount(&self, target: &Path) -> Result<(), MountError>;
}

/// Mount flags and filesystem data split out of `mount(8)`-style options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedOptions {
    /// Flags for `mount(2)`.
    pub flags: MountFlags,
    /// Comma-joined filesystem data (for example overlay's `lowerdir=...`).
    pub data: String,
}

/// Splits `mount(8)`-style options into `mount(2)` flags and filesystem data.
pub fn parse_options(options: &[String]) -> ParsedOptions {
    let mut flags = MountFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MountFlags::RDONLY,
            "rw" => flags &= !MountFlags::RDONLY,
            "nosuid" => flags |= MountFlags::NOSUID,
            "suid" => flags &= !MountFlags::NOSUID,
            "nodev" => flags |= MountFlags::NODEV,
            "dev" => flags &= !MountFlags::NODEV,
            "noexec" => flags |= MountFlags::NOEXEC,
            "exec" => flags &= !MountFlags::NOEXEC,
            "sync" => flags |= MountFlags::SYNCHRONOUS,
            "dirsync" => flags |= MountFlags::DIRSYNC,
            "noatime" => flags |= MountFlags::NOATIME,
            "nodiratime" => flags |= MountFlags::NODIRATIME,
            "relatime" => flags |= MountFlags::RELATIME,
            "strictatime" => flags |= MountFlags::STRICTATIME,
            "bind" => flags |= MountFlags::BIND,
            "rbind" => flags |= MountFlags::BIND | MountFlags::REC,
            "defaults" | "" => {}
            other => data.push(other),
        }
    }
    ParsedOptions {
        flags,
        data: data.join(","),
    }
}

/// [`MountOps`] through real `mount(2)`/`umount2(2)` calls (needs `CAP_SYS_ADMIN`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SyscallMountOps;

impl MountOps for SyscallMountOps {
    fn mount(&self, mount: &Mount, target: &Path) -> Result<(), MountError> {
        let parsed = parse_options(&mount.options);
        let fail = |source: std::io::Error| MountError::Mount {
            kind: mount.kind.clone(),
            mount_source: mount.source.clone(),
            target: target.to_path_buf(),
            source,
        };
        if mount.is_bind() {
            if parsed.flags.contains(MountFlags::REC) {
                rustix::mount::mount_bind_recursive(mount.source.as_str(), target)
            } else {
                rustix::mount::mount_bind(mount.source.as_str(), target)
            }
            .map_err(|e| fail(e.into()))?;
            let extra = parsed.flags & !(MountFlags::BIND | MountFlags::REC);
            if !extra.is_empty() {
                // Per-mount flags of a bind only take effect on a remount.
                if let Err(e) = rustix::mount::mount_remount(target, MountFlags::BIND | extra, "") {
                    let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
                    return Err(fail(e.into()));
                }
            }
            return Ok(());
        }
        let data = CString::new(parsed.data).map_err(|_| MountError::InvalidOptions {
            target: target.to_path_buf(),
        })?;
        rustix::mount::mount(
            mount.source.as_str(),
            target,
            mount.kind.as_str(),
            parsed.flags,
            data.as_c_str(),
        )
        .map_err(|e| fail(e.into()))
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(|e| MountError::Unmount {
            target: target.to_path_buf(),
            source: e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlay_options_split_into_flags_and_data() {
        let parsed = parse_options(&strings(&[
            "ro",
            "lowerdir=/a:/b",
            "upperdir=/u",
            "nosuid",
            "workdir=/w",
        ]));
        assert_eq!(parsed.flags, MountFlags::RDONLY | MountFlags::NOSUID);
        assert_eq!(parsed.data, "lowerdir=/a:/b,upperdir=/u,workdir=/w");
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let parsed = parse_options(&strings(&["ro", "rw", "rbind"]));
        assert_eq!(parsed.flags, MountFlags::BIND | MountFlags::REC);
        assert_eq!(parsed.data, "");
    }

    #[test]
    fn bind_is_detected_by_type_or_option() {
        let by_type = Mount {
            kind: "bind".into(),
            source: "/x".into(),
            options: vec![],
        };
        let by_option = Mount {
            kind: "none".into(),
            source: "/x".into(),
            options: strings(&["rbind", "ro"]),
        };
        let overlay = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: strings(&["lowerdir=/l"]),
        };
        assert!(by_type.is_bind() && !by_type.is_readonly());
        assert!(by_option.is_bind() && by_option.is_readonly());
        assert!(!overlay.is_bind());
    }
}
