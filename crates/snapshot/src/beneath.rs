//! Symlink-safe operations inside a directory tree: every path is walked one component at a time
//! with `O_NOFOLLOW | O_DIRECTORY`, so no write ever goes through a symlink or leaves the tree.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a path could not be resolved beneath the root.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// A component is a symlink (which we never follow).
    Symlink(String),
    /// A component exists but is not a directory.
    NotDirectory(String),
    /// A component does not exist (and creation was not asked for).
    Missing,
    Io(std::io::Error),
}

pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens directory `comps` beneath `root` without following symlinks; creates missing
/// directories (mode 0755) when `create`.
pub(crate) fn open_dir(
    root: BorrowedFd<'_>,
    comps: &[&OsStr],
    create: bool,
) -> Result<OwnedFd, ResolveError> {
    let mut cur = rustix::fs::openat(root, ".", DIR_FLAGS, Mode::empty())
        .map_err(|e| ResolveError::Io(e.into()))?;
    for (i, comp) in comps.iter().enumerate() {
        let shown = || {
            comps[..=i]
                .iter()
                .map(|c| c.to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        };
        let next = match rustix::fs::openat(&cur, *comp, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&cur, *comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(ResolveError::Io(e.into())),
                }
                rustix::fs::openat(&cur, *comp, DIR_FLAGS, Mode::empty())
                    .map_err(|e| ResolveError::Io(e.into()))?
            }
            Err(Errno::NOENT) => return Err(ResolveError::Missing),
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                return match rustix::fs::statat(&cur, *comp, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        Err(ResolveError::Symlink(shown()))
                    }
                    _ => Err(ResolveError::NotDirectory(shown())),
                };
            }
            Err(e) => return Err(ResolveError::Io(e.into())),
        };
        cur = next;
    }
    Ok(cur)
}

/// The type of `name` in `dir` without following symlinks, or `None` if it does not exist.
pub(crate) fn file_type_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` in `dir` (recursively if a directory), never following symlinks.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    match file_type_at(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let sub = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
            clear_dir(sub.as_fd(), &|_| true)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
            Ok(())
        }
        Some(_) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            Ok(())
        }
    }
}

/// Removes every entry of `dir` for which `remove(name)` is true.
pub(crate) fn clear_dir(
    dir: BorrowedFd<'_>,
    remove: &dyn Fn(&OsStr) -> bool,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(OsStr::from_bytes(name).to_owned());
    }
    for name in names {
        if remove(&name) {
            remove_at(dir, &name)?;
        }
    }
    Ok(())
}
