//! The container's root filesystem, set up by its init in its new mount namespace: every mount
//! destination is resolved inside the rootfs (`openat2` with `RESOLVE_IN_ROOT`, so an image's
//! symlinks never lead a mount outside it) and mounted through its `/proc/self/fd` path; then the
//! default devices, `pivot_root`, and the masked and read-only paths.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::config::{ContainerConfig, MountEntry};

/// A failed step of the root filesystem's setup.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {source}", path.display())]
pub struct RootfsError {
    /// What was being done.
    pub step: &'static str,
    /// The path it was done on.
    pub path: PathBuf,
    /// The system error.
    pub source: std::io::Error,
}

fn err(
    step: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(rustix::io::Errno) -> RootfsError {
    let path = path.into();
    move |e| RootfsError {
        step,
        path,
        source: e.into(),
    }
}

/// No setuid, no devices, no execution: what every system mount gets.
const RESTRICTED: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// Mount flags, propagation flags and filesystem data split out of `mount(8)`-style options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for `mount(2)`.
    pub flags: MountFlags,
    /// A propagation change to apply after mounting.
    pub propagation: Option<MountPropagationFlags>,
    /// Comma-joined filesystem data.
    pub data: String,
}

/// Parses `mount(8)`-style options.
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut parsed = MountOptions {
        flags: MountFlags::empty(),
        propagation: None,
        data: String::new(),
    };
    let mut data: Vec<&str> = Vec::new();
    for option in options {
        let (flags, propagation) = (&mut parsed.flags, &mut parsed.propagation);
        match option.as_str() {
            "ro" => *flags |= MountFlags::RDONLY,
            "rw" => *flags &= !MountFlags::RDONLY,
            "nosuid" => *flags |= MountFlags::NOSUID,
            "suid" => *flags &= !MountFlags::NOSUID,
            "nodev" => *flags |= MountFlags::NODEV,
            "dev" => *flags &= !MountFlags::NODEV,
            "noexec" => *flags |= MountFlags::NOEXEC,
            "exec" => *flags &= !MountFlags::NOEXEC,
            "sync" => *flags |= MountFlags::SYNCHRONOUS,
            "dirsync" => *flags |= MountFlags::DIRSYNC,
            "noatime" => *flags |= MountFlags::NOATIME,
            "nodiratime" => *flags |= MountFlags::NODIRATIME,
            "relatime" => *flags |= MountFlags::RELATIME,
            "strictatime" => *flags |= MountFlags::STRICTATIME,
            "bind" => *flags |= MountFlags::BIND,
            "rbind" => *flags |= MountFlags::BIND | MountFlags::REC,
            "private" => *propagation = Some(MountPropagationFlags::PRIVATE),
            "rprivate" => {
                *propagation = Some(MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
            }
            "slave" => *propagation = Some(MountPropagationFlags::DOWNSTREAM),
            "rslave" => {
                *propagation = Some(MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC)
            }
            "shared" => *propagation = Some(MountPropagationFlags::SHARED),
            "rshared" => {
                *propagation = Some(MountPropagationFlags::SHARED | MountPropagationFlags::REC)
            }
            "defaults" | "" => {}
            other => data.push(other),
        }
    }
    parsed.data = data.join(",");
    parsed
}

/// The components of an absolute container path, refusing `..`.
fn components(dest: &str) -> Result<Vec<&str>, RootfsError> {
    let mut out = Vec::new();
    for c in Path::new(dest).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name.to_str().unwrap_or_default()),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RootfsError {
                    step: "resolve",
                    path: dest.into(),
                    source: std::io::Error::from_raw_os_error(libc::EINVAL),
                });
            }
        }
    }
    Ok(out)
}

fn open_in_root(root: &OwnedFd, rel: &str, extra: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        root,
        if rel.is_empty() { "." } else { rel },
        OFlags::PATH | OFlags::CLOEXEC | extra,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Opens `dest` inside the root (`O_PATH`), creating missing directories on the way and the last
/// component as a directory, or as an empty file when `file`.
pub(crate) fn ensure_target(
    root: &OwnedFd,
    dest: &str,
    file: bool,
) -> Result<OwnedFd, RootfsError> {
    let parts = components(dest)?;
    let mut rel = String::new();
    for (i, part) in parts.iter().enumerate() {
        let parent = open_in_root(root, &rel, OFlags::DIRECTORY).map_err(err("open", dest))?;
        if !rel.is_empty() {
            rel.push('/');
        }
        rel.push_str(part);
        match open_in_root(root, &rel, OFlags::empty()) {
            Ok(_) => continue,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(err("open", dest)(e)),
        }
        let last = i + 1 == parts.len();
        if last && file {
            rustix::fs::openat(
                &parent,
                *part,
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            rustix::fs::mkdirat(&parent, *part, Mode::from_raw_mode(0o755))
        }
        .or_else(|e| {
            if e == rustix::io::Errno::EXIST {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(err("create", dest))?;
    }
    open_in_root(root, &rel, OFlags::empty()).map_err(err("open", dest))
}

/// `mount(2)` of a filesystem with `data` (none when empty).
fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> rustix::io::Result<()> {
    let data = std::ffi::CString::new(data).map_err(|_| rustix::io::Errno::INVAL)?;
    let data = (!data.is_empty()).then_some(data.as_c_str());
    rustix::mount::mount(source, target, fstype, flags, data)
}

/// Remounts what is mounted at `dest` in the root with `flags` (reopened by path: a descriptor
/// taken before the mount names what the mount covered).
fn remount_in_root(
    root: &OwnedFd,
    dest: &str,
    flags: MountFlags,
    data: &str,
) -> Result<(), RootfsError> {
    let mounted = open_in_root(root, dest.trim_start_matches('/'), OFlags::empty())
        .map_err(err("open", dest))?;
    rustix::mount::mount_remount(fd_path(&mounted).as_str(), flags, data)
        .map_err(err("remount", dest))
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}

/// Host cgroup directories to show at `/sys/fs/cgroup/<name>` on cgroup v1.
pub type CgroupBinds = Vec<(String, PathBuf)>;

/// Mounts everything under the rootfs, then pivots into it and masks what must not be seen.
pub(crate) fn setup(
    config: &ContainerConfig,
    cgroup_binds: &CgroupBinds,
) -> Result<(), RootfsError> {
    let rootfs = &config.rootfs;
    // Nothing mounted here propagates back to the host.
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(err("make / a slave", "/"))?;
    rustix::mount::mount_bind_recursive(rootfs, rootfs).map_err(err("bind", rootfs))?;
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open", rootfs))?;
    for mount in &config.mounts {
        mount_one(&root, mount, cgroup_binds)?;
        if mount.destination == "/dev" {
            default_devices(&root)?;
        }
    }
    rustix::process::fchdir(&root).map_err(err("chdir", rootfs))?;
    rustix::process::pivot_root(".", ".").map_err(err("pivot_root", rootfs))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(err("detach the old root", "/"))?;
    rustix::process::chdir("/").map_err(err("chdir", "/"))?;
    for path in &config.masked_paths {
        mask(path)?;
    }
    for path in &config.readonly_paths {
        readonly(path)?;
    }
    if config.readonly_root {
        rustix::mount::mount_remount("/", MountFlags::BIND | MountFlags::RDONLY, "")
            .map_err(err("remount read-only", "/"))?;
    }
    Ok(())
}

fn mount_one(
    root: &OwnedFd,
    mount: &MountEntry,
    cgroup_binds: &CgroupBinds,
) -> Result<(), RootfsError> {
    let options = parse_options(&mount.options);
    let dest = mount.destination.as_str();
    let bind = mount.kind == "bind" || options.flags.contains(MountFlags::BIND);
    let file = bind && !Path::new(&mount.source).is_dir();
    let target = ensure_target(root, dest, file)?;
    let path = fd_path(&target);
    if bind {
        if options.flags.contains(MountFlags::REC) {
            rustix::mount::mount_bind_recursive(mount.source.as_str(), path.as_str())
        } else {
            rustix::mount::mount_bind(mount.source.as_str(), path.as_str())
        }
        .map_err(err("bind", dest))?;
        let extra = options.flags - (MountFlags::BIND | MountFlags::REC);
        if !extra.is_empty() {
            // The fd names what the mount covered: reopen the path for the new mount.
            remount_in_root(root, dest, extra | MountFlags::BIND, "")?;
        }
    } else if mount.kind == "cgroup" {
        mount_cgroups(root, &path, dest, &options, cgroup_binds)?;
    } else {
        mount_fs(
            mount.source.as_str(),
            path.as_str(),
            mount.kind.as_str(),
            options.flags,
            options.data.as_str(),
        )
        .map_err(err("mount", dest))?;
    }
    if let Some(propagation) = options.propagation {
        let mounted = open_in_root(root, dest.trim_start_matches('/'), OFlags::empty())
            .map_err(err("open", dest))?;
        rustix::mount::mount_change(fd_path(&mounted).as_str(), propagation)
            .map_err(err("set propagation", dest))?;
    }
    Ok(())
}

/// `/sys/fs/cgroup`: on cgroup v2 a cgroup2 mount; on v1 a tmpfs holding read-only binds of the
/// container's own cgroup in each hierarchy it was put in.
fn mount_cgroups(
    root: &OwnedFd,
    path: &str,
    dest: &str,
    options: &MountOptions,
    binds: &CgroupBinds,
) -> Result<(), RootfsError> {
    let flags = options.flags;
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return mount_fs("cgroup2", path, "cgroup2", flags, "").map_err(err("mount cgroup2", dest));
    }
    mount_fs(
        "tmpfs",
        path,
        "tmpfs",
        (flags - MountFlags::RDONLY) | RESTRICTED,
        "mode=755",
    )
    .map_err(err("mount tmpfs", dest))?;
    for (name, host_dir) in binds {
        let sub = format!("{}/{name}", dest.trim_end_matches('/'));
        let target = ensure_target(root, &sub, false)?;
        let target_path = fd_path(&target);
        rustix::mount::mount_bind(host_dir, target_path.as_str())
            .map_err(err("bind", sub.clone()))?;
        remount_in_root(
            root,
            &sub,
            MountFlags::BIND | MountFlags::RDONLY | RESTRICTED,
            "",
        )?;
    }
    if flags.contains(MountFlags::RDONLY) {
        remount_in_root(root, dest, MountFlags::RDONLY | RESTRICTED, "mode=755")?;
    }
    Ok(())
}

/// runc's default devices on the `/dev` tmpfs, and its links.
fn default_devices(root: &OwnedFd) -> Result<(), RootfsError> {
    let dev = open_in_root(root, "dev", OFlags::DIRECTORY).map_err(err("open", "/dev"))?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        rustix::fs::mknodat(
            &dev,
            name,
            rustix::fs::FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )
        .map_err(err("mknod", format!("/dev/{name}")))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        match rustix::fs::symlinkat(target, &dev, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(err("symlink", format!("/dev/{name}"))(e)),
        }
    }
    Ok(())
}

/// Hides `path` (after the pivot): `/dev/null` over a file, an empty read-only tmpfs over a
/// directory; absent paths are skipped.
fn mask(path: &str) -> Result<(), RootfsError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Ok(()),
    };
    if meta.is_dir() {
        mount_fs("tmpfs", path, "tmpfs", MountFlags::RDONLY, "").map_err(err("mask", path))
    } else {
        rustix::mount::mount_bind("/dev/null", path).map_err(err("mask", path))
    }
}

/// Makes `path` read-only (after the pivot); absent paths are skipped.
fn readonly(path: &str) -> Result<(), RootfsError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    rustix::mount::mount_bind_recursive(path, path).map_err(err("bind", path))?;
    rustix::mount::mount_remount(path, MountFlags::BIND | MountFlags::RDONLY | RESTRICTED, "")
        .map_err(err("remount read-only", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&[
            "rbind".into(),
            "ro".into(),
            "rprivate".into(),
            "mode=755".into(),
            "size=1k".into(),
        ]);
        assert!(
            o.flags
                .contains(MountFlags::BIND | MountFlags::REC | MountFlags::RDONLY)
        );
        assert_eq!(
            o.propagation,
            Some(MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
        );
        assert_eq!(o.data, "mode=755,size=1k");
        let o = parse_options(&["ro".into(), "rw".into()]);
        assert!(!o.flags.contains(MountFlags::RDONLY));
    }

    #[test]
    fn targets_are_created_inside_the_root_even_through_escaping_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(root_path.join("inside")).unwrap();
        // An absolute link that names a host directory, a relative one climbing out of the
        // root, and a dangling one.
        std::os::unix::fs::symlink("/inside", root_path.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root_path.join("up")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root_path.join("dangling")).unwrap();
        let root =
            rustix::fs::open(&root_path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        ensure_target(&root, "/abs/etc/x", false).unwrap();
        ensure_target(&root, "/up/file", true).unwrap();
        // A link to a directory the root lacks (the host has it) is an error, never the host's.
        let err = ensure_target(&root, "/dangling/y", false).unwrap_err();
        assert_eq!(err.path, PathBuf::from("/dangling/y"));
        // All resolved inside the root: `abs` to `<root>/inside`, `up` to the root.
        assert!(
            std::fs::read_dir(outside.path()).unwrap().next().is_none(),
            "nothing outside"
        );
        assert!(root_path.join("inside/etc/x").is_dir());
        assert!(root_path.join("file").is_file());
        assert!(!Path::new("/inside").exists());
        assert!(matches!(
            ensure_target(&root, "/a/../b", false),
            Err(RootfsError {
                step: "resolve",
                ..
            })
        ));
    }
}
