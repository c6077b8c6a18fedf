//! Tree helpers for our own snapshot directories: a metadata-preserving copy (the copy backend)
//! and disk usage. Never follows symlinks.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps};

/// Disk usage of a tree: allocated bytes (hard links counted once) and inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub size: u64,
    pub inodes: u64,
}

/// Bytes and inodes used under `root` (hard links counted once). Blocking.
pub fn disk_usage(root: &Path) -> std::io::Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let m = entry.metadata()?;
            if seen.insert((m.dev(), m.ino())) {
                usage.size += m.blocks() * 512;
                usage.inodes += 1;
            }
            if m.file_type().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(usage)
}

fn times_of(m: &std::fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec() as _,
        },
    }
}

pub(crate) fn copy_meta(
    dst: &Path,
    m: &std::fs::Metadata,
    xattrs_from: Option<&Path>,
) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))?;
    if !m.file_type().is_symlink() {
        // After chown, which clears set-id bits.
        rustix::fs::chmodat(
            rustix::fs::CWD,
            dst,
            Mode::from_raw_mode(m.mode() & 0o7777),
            AtFlags::empty(),
        )?;
        if let Some(src) = xattrs_from {
            copy_xattrs(src, dst)?;
        }
    }
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dst,
        &times_of(m),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn copy_xattrs(src: &Path, dst: &Path) -> std::io::Result<()> {
    for (name, value) in read_xattrs(src)? {
        match rustix::fs::lsetxattr(
            dst,
            name.as_os_str(),
            &value,
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// All extended attributes of `path` (not following symlinks).
pub(crate) fn read_xattrs(path: &Path) -> std::io::Result<Vec<(std::ffi::OsString, Vec<u8>)>> {
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let len = rustix::fs::llistxattr(path, &mut names[..])?;
    names.truncate(len);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::OsStr::from_bytes(name);
        let size = match rustix::fs::lgetxattr_query(path, name) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut value = vec![0u8; size];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..])?;
        value.truncate(len);
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

/// Copies the tree `src` into the existing empty directory `dst`, preserving types, modes,
/// owners, times, xattrs, symlinks, hard links (within the tree) and device nodes.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    copy_dir_contents(src, dst, &mut links)?;
    let m = std::fs::symlink_metadata(src).map_err(|e| (src.to_owned(), e))?;
    copy_meta(dst, &m, Some(src)).map_err(|e| (dst.to_owned(), e))
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), (PathBuf, std::io::Error)> {
    let at = |p: &Path| {
        let p = p.to_owned();
        move |e: std::io::Error| (p, e)
    };
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(at(src))?
        .collect::<Result<_, _>>()
        .map_err(at(src))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let m = std::fs::symlink_metadata(&s).map_err(at(&s))?;
        let ft = m.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&d).map_err(at(&d))?;
            copy_dir_contents(&s, &d, links)?;
            copy_meta(&d, &m, Some(&s)).map_err(at(&d))?;
            continue;
        }
        if m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                std::fs::hard_link(first, &d).map_err(at(&d))?;
                continue;
            }
            links.insert((m.dev(), m.ino()), d.clone());
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(&s).map_err(at(&s))?;
            std::os::unix::fs::symlink(&target, &d).map_err(at(&d))?;
        } else if ft.is_file() {
            std::fs::copy(&s, &d).map_err(at(&d))?;
        } else {
            let kind = if ft.is_char_device() {
                FileType::CharacterDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else if ft.is_fifo() {
                FileType::Fifo
            } else {
                FileType::Socket
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &d,
                kind,
                Mode::from_raw_mode(m.mode() & 0o7777),
                m.rdev(),
            )
            .map_err(|e| (d.clone(), e.into()))?;
        }
        copy_meta(&d, &m, Some(&s)).map_err(at(&d))?;
    }
    Ok(())
}
