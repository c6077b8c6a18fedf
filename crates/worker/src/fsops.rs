//! File operations inside a mounted snapshot: every path is resolved as if the snapshot were the
//! root filesystem ([`resolve_in_root`]: `..` stops at the root, symlinks are followed relative to
//! it), so nothing a snapshot contains can make an operation touch the host outside it.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use dagr_pathfilter::{Decision, PathFilter};

/// Errors of file operations, naming the path inside the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: is a directory")]
    IsADirectory { path: String },
    #[error(transparent)]
    Pattern(#[from] dagr_pathfilter::PatternError),
    #[error("{path}: extracting archive: {source}")]
    Archive {
        path: String,
        #[source]
        source: Box<dagr_snapshot::LayerError>,
    },
}

fn io_err(path: &str) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |source| FsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Resolves `path` inside `root` as if `root` were `/` (see [`dagr_pathfilter::resolve_in_root`]).
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf, FsError> {
    dagr_pathfilter::resolve_in_root(root, path, follow_last).map_err(|e| match e {
        dagr_pathfilter::ResolveError::SymlinkLoop { path } => FsError::SymlinkLoop { path },
        dagr_pathfilter::ResolveError::ReadLink { path, source } => FsError::Io { path, source },
    })
}

/// Owner to set on created entries (the solver's file-op owner).
pub use dagr_solver::Owner;

fn chown(p: &Path, owner: Option<Owner>, shown: &str) -> Result<(), FsError> {
    if let Some(o) = owner {
        std::os::unix::fs::lchown(p, Some(o.uid), Some(o.gid)).map_err(io_err(shown))?;
    }
    Ok(())
}

/// Creates every missing directory of `dir` (mode 0755), resolving inside `root`.
fn mkdir_all(root: &Path, dir: &str) -> Result<PathBuf, FsError> {
    mkdir_all_as(root, dir, 0o755, None)
}

/// BuildKit's `MkdirAll`: creates every missing directory of `dir` (resolved inside `root`, so
/// a symlink on the way is followed there); each directory created gets `mode` and `owner`,
/// existing ones are left as they are.
fn mkdir_all_as(
    root: &Path,
    dir: &str,
    mode: u32,
    owner: Option<Owner>,
) -> Result<PathBuf, FsError> {
    let target = resolve_in_root(root, dir, true)?;
    let below = target
        .strip_prefix(root)
        .map_err(|_| FsError::NotADirectory { path: dir.into() })?;
    let mut at = root.to_path_buf();
    for component in below.components() {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => return Err(FsError::NotADirectory { path: dir.into() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at).map_err(io_err(dir))?;
                fs::set_permissions(&at, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(io_err(dir))?;
                chown(&at, owner, dir)?;
            }
            Err(e) => return Err(io_err(dir)(e)),
        }
    }
    Ok(target)
}

fn parent_of(path: &str) -> &str {
    match Path::new(path).parent() {
        Some(p) => p.to_str().unwrap_or("/"),
        None => "/",
    }
}

fn file_name(path: &str) -> Result<OsString, FsError> {
    Path::new(path)
        .file_name()
        .map(ToOwned::to_owned)
        .ok_or_else(|| FsError::IsADirectory { path: path.into() })
}

/// Writes a file (replacing any entry of that name), creating missing parent directories.
pub fn mkfile(
    root: &Path,
    path: &str,
    contents: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> Result<(), FsError> {
    let dir = mkdir_all(root, parent_of(path))?;
    let target = dir.join(file_name(path)?);
    if let Ok(md) = fs::symlink_metadata(&target) {
        if md.is_dir() {
            return Err(FsError::IsADirectory { path: path.into() });
        }
        fs::remove_file(&target).map_err(io_err(path))?;
    }
    fs::write(&target, contents).map_err(io_err(path))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io_err(path))?;
    chown(&target, owner, path)
}

/// Creates a directory (and its missing parents when `parents`) with `mode` and `owner`, as
/// BuildKit does: every directory created gets them, a directory that exists is left as it is.
pub fn mkdir(
    root: &Path,
    path: &str,
    mode: u32,
    parents: bool,
    owner: Option<Owner>,
) -> Result<(), FsError> {
    if parents {
        mkdir_all_as(root, path, mode, owner)?;
        return Ok(());
    }
    let parent = resolve_in_root(root, parent_of(path), true)?;
    if !parent.is_dir() {
        return Err(FsError::NotFound {
            path: parent_of(path).into(),
        });
    }
    let name = match Path::new(path).file_name() {
        Some(n) => n.to_owned(),
        None => return Ok(()), // the root itself
    };
    let target = parent.join(name);
    match fs::symlink_metadata(&target) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(FsError::NotADirectory { path: path.into() }),
        Err(_) => {
            fs::create_dir(&target).map_err(io_err(path))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io_err(path))?;
            chown(&target, owner, path)
        }
    }
}

/// Removes a file, symlink or directory tree.
pub fn rm(root: &Path, path: &str, allow_not_found: bool) -> Result<(), FsError> {
    let target = resolve_in_root(root, path, false)?;
    if target == root {
        // Removing "/" empties the tree.
        for entry in fs::read_dir(root).map_err(io_err(path))? {
            let entry = entry.map_err(io_err(path))?;
            remove_any(&entry.path()).map_err(io_err(path))?;
        }
        return Ok(());
    }
    match fs::symlink_metadata(&target) {
        Ok(_) => remove_any(&target).map_err(io_err(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && allow_not_found => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(FsError::NotFound { path: path.into() })
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

fn remove_any(p: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(p)?;
    if md.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
}

/// How [`copy`] treats its source.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Override the mode of copied files and directories.
    pub mode: Option<u32>,
    pub owner: Option<Owner>,
    /// `src` may hold glob patterns (`*`, `?`, `[...]`) in any component: every match is
    /// copied, and at least one must exist.
    pub allow_wildcard: bool,
    /// A source file that is a tar archive (plain, gzip or zstd) is extracted into `dest`.
    pub unpack_archive: bool,
}

/// What [`copy`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// Copies `src` of `src_root` to `dest` of `dest_root`. A directory source has its *contents*
/// merged into `dest` (created if missing), filtered by the patterns; a file source is written at
/// `dest` (parents created), or inside `dest` under its own name when `dest` is a directory or
/// ends with `/`. Every match of a wildcard is copied the same way, in order (so several files
/// onto a `dest` without `/` that is no directory leave the last one, as in BuildKit). Modes,
/// symlinks (not followed), owners and mtimes are kept, but for the `mode` and `owner` options,
/// which apply to every copied entry, directories included. Directories created to hold the
/// copy get the owner and the `mode` (0755 without one); existing ones are left as they are.
pub fn copy(
    src_root: &Path,
    src: &str,
    dest_root: &Path,
    dest: &str,
    opts: &CopyOptions,
) -> Result<CopyStats, FsError> {
    let sources = if opts.allow_wildcard && has_glob(src) {
        let matches = glob_in_root(src_root, src)?;
        if matches.is_empty() {
            return Err(FsError::NotFound { path: src.into() });
        }
        matches
    } else {
        vec![src.to_owned()]
    };
    let into_dir = dest.ends_with('/');
    let mut stats = CopyStats::default();
    for source in &sources {
        copy_one(
            src_root, source, dest_root, dest, into_dir, opts, &mut stats,
        )?;
    }
    Ok(stats)
}

fn copy_one(
    src_root: &Path,
    src: &str,
    dest_root: &Path,
    dest: &str,
    into_dir: bool,
    opts: &CopyOptions,
    stats: &mut CopyStats,
) -> Result<(), FsError> {
    let from = resolve_in_root(src_root, src, true)?;
    let md = fs::symlink_metadata(&from).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => FsError::NotFound { path: src.into() },
        _ => io_err(src)(e),
    })?;
    // Directories created for the destination: BuildKit's `MkdirAll` with the copy's mode
    // (0755 without one) and owner.
    let created_mode = opts.mode.map_or(0o755, |m| m & 0o777);
    if md.is_dir() {
        let filter = PathFilter::new(&opts.include, &opts.exclude)?;
        let to = mkdir_all_as(dest_root, dest, created_mode, opts.owner)?;
        let mut walker = TreeCopy {
            filter: &filter,
            opts,
            stats,
            shown: src,
        };
        walker.dir(&from, &to, Path::new(""), false)?;
        return Ok(());
    }
    if opts.unpack_archive && md.is_file() && is_archive(&from).map_err(io_err(src))? {
        let to = mkdir_all_as(dest_root, dest, 0o755, opts.owner)?;
        let archive = fs::File::open(&from).map_err(io_err(src))?;
        let applied =
            dagr_snapshot::apply_layer(archive, &to, &dagr_snapshot::ApplyOptions::default())
                .map_err(|e| FsError::Archive {
                    path: src.into(),
                    source: Box::new(e),
                })?;
        stats.files += applied.entries;
        stats.bytes += applied.file_bytes;
        return Ok(());
    }
    // BuildKit's rule: a file copied onto an existing directory lands inside it.
    let existing = resolve_in_root(dest_root, dest, true)?;
    let to = if into_dir {
        mkdir_all_as(dest_root, dest, created_mode, opts.owner)?.join(file_name(src)?)
    } else if existing.is_dir() {
        existing.join(file_name(src)?)
    } else {
        mkdir_all_as(dest_root, parent_of(dest), created_mode, opts.owner)?.join(file_name(dest)?)
    };
    copy_entry(&from, &to, &md, opts, stats).map_err(io_err(dest))
}

fn is_archive(path: &Path) -> io::Result<bool> {
    dagr_snapshot::is_tar_archive(fs::File::open(path)?)
}

fn has_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// The paths inside `root` matching `pattern` (glob components, `*` not crossing `/`), sorted.
fn glob_in_root(root: &Path, pattern: &str) -> Result<Vec<String>, FsError> {
    let mut found = vec![String::new()];
    for component in pattern.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let mut next = Vec::new();
        for prefix in &found {
            if !has_glob(component) {
                next.push(format!("{prefix}/{component}"));
                continue;
            }
            let matcher = globset::GlobBuilder::new(component)
                .literal_separator(true)
                .build()
                .map_err(|source| dagr_pathfilter::PatternError {
                    pattern: component.to_owned(),
                    source,
                })?
                .compile_matcher();
            let dir = resolve_in_root(root, if prefix.is_empty() { "/" } else { prefix }, true)?;
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| matcher.is_match(name))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| format!("{prefix}/{n}")));
        }
        found = next;
    }
    Ok(found
        .into_iter()
        .filter(|p| !p.is_empty())
        .filter(|p| resolve_in_root(root, p, false).is_ok_and(|r| fs::symlink_metadata(r).is_ok()))
        .collect())
}

struct TreeCopy<'a> {
    filter: &'a PathFilter,
    opts: &'a CopyOptions,
    stats: &'a mut CopyStats,
    shown: &'a str,
}

impl TreeCopy<'_> {
    /// Copies the entries of `from` into the existing directory `to`. Returns whether anything was
    /// taken (for directories created only to hold included entries).
    fn dir(&mut self, from: &Path, to: &Path, rel: &Path, taken: bool) -> Result<bool, FsError> {
        let shown = self.shown;
        let mut entries: Vec<_> = fs::read_dir(from)
            .map_err(io_err(shown))?
            .collect::<Result<_, _>>()
            .map_err(io_err(shown))?;
        entries.sort_by_key(|e| e.file_name());
        let mut any = false;
        for entry in entries {
            let name = entry.file_name();
            let child_rel = rel.join(&name);
            let src = entry.path();
            let md = fs::symlink_metadata(&src).map_err(io_err(shown))?;
            let decision = self.filter.decide(&child_rel, md.is_dir(), taken);
            let dst = to.join(&name);
            match decision {
                Decision::Skip => {}
                Decision::Take if !md.is_dir() => {
                    copy_entry(&src, &dst, &md, self.opts, self.stats).map_err(io_err(shown))?;
                    any = true;
                }
                Decision::Take => {
                    ensure_dir(&dst, &md).map_err(io_err(shown))?;
                    self.stats.dirs += 1;
                    self.dir(&src, &dst, &child_rel, true)?;
                    finish_dir(&dst, &md, self.opts).map_err(io_err(shown))?;
                    any = true;
                }
                Decision::Descend => {
                    let existed = dst.exists();
                    ensure_dir(&dst, &md).map_err(io_err(shown))?;
                    if self.dir(&src, &dst, &child_rel, false)? {
                        self.stats.dirs += 1;
                        finish_dir(&dst, &md, self.opts).map_err(io_err(shown))?;
                        any = true;
                    } else if !existed {
                        let _ = fs::remove_dir(&dst);
                    }
                }
            }
        }
        Ok(any)
    }
}

fn ensure_dir(dst: &Path, _md: &fs::Metadata) -> io::Result<()> {
    match fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(dst)?;
            fs::create_dir(dst)
        }
        Err(_) => fs::create_dir(dst),
    }
}

/// Mode, owner and mtime of a directory, set after its content (the `mode` option applies to
/// directories too, as in BuildKit).
fn finish_dir(dst: &Path, md: &fs::Metadata, opts: &CopyOptions) -> io::Result<()> {
    let (uid, gid) = opts.owner.map_or((md.uid(), md.gid()), |o| (o.uid, o.gid));
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid))?;
    let mode = opts.mode.unwrap_or(md.mode() & 0o7777);
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    filetime::set_file_mtime(dst, filetime::FileTime::from_last_modification_time(md))
}

fn copy_entry(
    src: &Path,
    dst: &Path,
    md: &fs::Metadata,
    opts: &CopyOptions,
    stats: &mut CopyStats,
) -> io::Result<()> {
    if let Ok(existing) = fs::symlink_metadata(dst) {
        if existing.is_dir() {
            fs::remove_dir_all(dst)?;
        } else {
            fs::remove_file(dst)?;
        }
    }
    let (uid, gid) = opts.owner.map_or((md.uid(), md.gid()), |o| (o.uid, o.gid));
    let mtime = filetime::FileTime::from_last_modification_time(md);
    let ft = md.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid))?;
        filetime::set_symlink_file_times(dst, mtime, mtime)?;
        stats.files += 1;
        return Ok(());
    }
    if ft.is_file() {
        stats.bytes += fs::copy(src, dst)?;
        let mode = opts.mode.unwrap_or(md.mode() & 0o7777);
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid))?;
        // chown clears setuid bits: set the mode after it.
        fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
        filetime::set_file_mtime(dst, mtime)?;
        stats.files += 1;
        return Ok(());
    }
    // Devices, fifos and sockets are recreated as such.
    use std::os::unix::fs::FileTypeExt as _;
    let kind = if ft.is_fifo() {
        rustix::fs::FileType::Fifo
    } else if ft.is_char_device() {
        rustix::fs::FileType::CharacterDevice
    } else if ft.is_block_device() {
        rustix::fs::FileType::BlockDevice
    } else {
        // Sockets cannot be copied meaningfully.
        return Ok(());
    };
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dst,
        kind,
        rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777),
        md.rdev(),
    )?;
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid))?;
    filetime::set_file_mtime(dst, mtime)?;
    stats.files += 1;
    Ok(())
}

/// Sets the modification and access times of `path` inside `root` and of everything under it
/// (symlinks themselves, not their targets).
pub fn set_timestamps(root: &Path, path: &str, timestamp: i64) -> Result<(), FsError> {
    fn walk(p: &Path, t: filetime::FileTime, shown: &str) -> Result<(), FsError> {
        let md = fs::symlink_metadata(p).map_err(io_err(shown))?;
        if md.is_dir() {
            for e in fs::read_dir(p).map_err(io_err(shown))? {
                walk(&e.map_err(io_err(shown))?.path(), t, shown)?;
            }
        }
        filetime::set_symlink_file_times(p, t, t).map_err(io_err(shown))
    }
    let target = resolve_in_root(root, path, true)?;
    if fs::symlink_metadata(&target).is_err() {
        return Err(FsError::NotFound { path: path.into() });
    }
    walk(
        &target,
        filetime::FileTime::from_unix_time(timestamp, 0),
        path,
    )
}

/// Copies into `out` every entry of `upper` that is new or changed compared with `lower` (type,
/// mode, owner, size, mtime, link target, contents), with the directories that lead to them.
/// Entries only in `lower` (deletions) are not represented.
pub fn diff_into(lower: &Path, upper: &Path, out: &Path) -> Result<CopyStats, FsError> {
    fn same(l: &fs::Metadata, u: &fs::Metadata, lp: &Path, up: &Path) -> bool {
        if l.file_type() != u.file_type()
            || l.mode() != u.mode()
            || l.uid() != u.uid()
            || l.gid() != u.gid()
        {
            return false;
        }
        if u.file_type().is_symlink() {
            return fs::read_link(lp).ok() == fs::read_link(up).ok();
        }
        if u.is_file() {
            if l.len() != u.len() {
                return false;
            }
            if l.mtime() == u.mtime() && l.mtime_nsec() == u.mtime_nsec() {
                return true;
            }
            return fs::read(lp).ok() == fs::read(up).ok();
        }
        true
    }
    fn walk(
        lower: &Path,
        upper: &Path,
        out: &Path,
        stats: &mut CopyStats,
    ) -> Result<bool, FsError> {
        let shown = upper.to_string_lossy().to_string();
        let mut any = false;
        let mut names: Vec<_> = fs::read_dir(upper)
            .map_err(io_err(&shown))?
            .collect::<Result<_, _>>()
            .map_err(io_err(&shown))?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let name = e.file_name();
            let (lp, up, op) = (lower.join(&name), upper.join(&name), out.join(&name));
            let umd = fs::symlink_metadata(&up).map_err(io_err(&shown))?;
            let lmd = fs::symlink_metadata(&lp).ok();
            let unchanged = lmd.as_ref().is_some_and(|l| same(l, &umd, &lp, &up));
            if umd.is_dir() {
                let existed = op.exists();
                ensure_dir(&op, &umd).map_err(io_err(&shown))?;
                let below = walk(&lp, &up, &op, stats)?;
                if below || !unchanged {
                    finish_dir(&op, &umd, &CopyOptions::default()).map_err(io_err(&shown))?;
                    stats.dirs += 1;
                    any = true;
                } else if !existed {
                    let _ = fs::remove_dir(&op);
                }
            } else if !unchanged {
                copy_entry(&up, &op, &umd, &CopyOptions::default(), stats)
                    .map_err(io_err(&shown))?;
                any = true;
            }
        }
        Ok(any)
    }
    let mut stats = CopyStats::default();
    walk(lower, upper, out, &mut stats)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_stays_inside_the_root() {
        let d = tempfile::tempdir().expect("tmp");
        let root = d.path();
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).expect("link");
        std::os::unix::fs::symlink("../../..", root.join("a/b/up")).expect("link");
        std::os::unix::fs::symlink("loop2", root.join("loop1")).expect("link");
        std::os::unix::fs::symlink("loop1", root.join("loop2")).expect("link");
        assert_eq!(
            resolve_in_root(root, "/../../etc/passwd", true).expect("r"),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, "etc-link/passwd", true).expect("r"),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, "a/b/up/x", true).expect("r"),
            root.join("x")
        );
        assert_eq!(
            resolve_in_root(root, "etc-link", false).expect("r"),
            root.join("etc-link")
        );
        assert!(matches!(
            resolve_in_root(root, "loop1/x", true),
            Err(FsError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn file_ops_through_a_hostile_symlink_stay_inside() {
        let outside = tempfile::tempdir().expect("tmp");
        let d = tempfile::tempdir().expect("tmp");
        let root = d.path();
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).expect("link");
        mkfile(root, "/escape/pwned", b"x", 0o644, None).expect("mkfile");
        assert!(fs::read_dir(outside.path()).expect("read").next().is_none());
        // The link target was resolved inside the root.
        let inside = root
            .join(outside.path().strip_prefix("/").expect("abs"))
            .join("pwned");
        assert_eq!(fs::read(inside).expect("inside"), b"x");
        rm(root, "/escape", false).expect("rm link");
        assert!(outside.path().exists());
    }

    #[test]
    fn mkfile_mkdir_rm() {
        let d = tempfile::tempdir().expect("tmp");
        let root = d.path();
        mkfile(root, "/x/y/z.txt", b"hello", 0o600, None).expect("mkfile");
        let md = fs::metadata(root.join("x/y/z.txt")).expect("md");
        assert_eq!(md.mode() & 0o777, 0o600);
        mkdir(root, "/d/e", 0o750, true, None).expect("mkdir");
        assert_eq!(
            fs::metadata(root.join("d/e")).expect("md").mode() & 0o777,
            0o750
        );
        assert!(matches!(
            mkdir(root, "/q/r", 0o755, false, None),
            Err(FsError::NotFound { .. })
        ));
        rm(root, "/x", false).expect("rm");
        assert!(!root.join("x").exists());
        assert!(matches!(
            rm(root, "/x", false),
            Err(FsError::NotFound { .. })
        ));
        rm(root, "/x", true).expect("allowed");
    }

    #[test]
    fn diff_keeps_new_and_changed_entries_only() {
        let l = tempfile::tempdir().expect("tmp");
        let u = tempfile::tempdir().expect("tmp");
        let o = tempfile::tempdir().expect("tmp");
        for root in [l.path(), u.path()] {
            fs::create_dir_all(root.join("same/deep")).expect("mkdir");
            fs::write(root.join("same/deep/f"), "x").expect("w");
            filetime::set_file_mtime(
                root.join("same/deep/f"),
                filetime::FileTime::from_unix_time(5, 0),
            )
            .expect("mtime");
            fs::write(root.join("changed"), "old").expect("w");
            fs::write(root.join("gone-in-upper"), "x").expect("w");
        }
        fs::remove_file(u.path().join("gone-in-upper")).expect("rm");
        fs::write(u.path().join("changed"), "new!").expect("w");
        fs::create_dir_all(u.path().join("same/added")).expect("mkdir");
        fs::write(u.path().join("same/added/n"), "n").expect("w");
        diff_into(l.path(), u.path(), o.path()).expect("diff");
        assert_eq!(
            fs::read_to_string(o.path().join("changed")).expect("r"),
            "new!"
        );
        assert_eq!(
            fs::read_to_string(o.path().join("same/added/n")).expect("r"),
            "n"
        );
        assert!(
            !o.path().join("same/deep").exists(),
            "unchanged subtree left out"
        );
        assert!(!o.path().join("gone-in-upper").exists());
    }

    #[test]
    fn timestamps_are_set_on_the_whole_tree() {
        let d = tempfile::tempdir().expect("tmp");
        fs::create_dir_all(d.path().join("a/b")).expect("mkdir");
        fs::write(d.path().join("a/b/f"), "x").expect("w");
        std::os::unix::fs::symlink("nowhere", d.path().join("a/link")).expect("link");
        set_timestamps(d.path(), "/a", 1234).expect("set");
        for p in ["a", "a/b", "a/b/f"] {
            assert_eq!(
                fs::metadata(d.path().join(p)).expect("md").mtime(),
                1234,
                "{p}"
            );
        }
        assert_eq!(
            fs::symlink_metadata(d.path().join("a/link"))
                .expect("md")
                .mtime(),
            1234
        );
        assert!(matches!(
            set_timestamps(d.path(), "/nope", 1),
            Err(FsError::NotFound { .. })
        ));
    }

    #[test]
    fn wildcard_copies_every_match_and_archives_are_unpacked() {
        let s = tempfile::tempdir().expect("tmp");
        let t = tempfile::tempdir().expect("tmp");
        let src = s.path();
        fs::create_dir_all(src.join("a/conf")).expect("mkdir");
        fs::write(src.join("a/one.txt"), "1").expect("w");
        fs::write(src.join("a/two.txt"), "2").expect("w");
        fs::write(src.join("a/three.md"), "3").expect("w");
        fs::write(src.join("a/conf/x.txt"), "x").expect("w");
        let wild = CopyOptions {
            allow_wildcard: true,
            ..Default::default()
        };
        copy(src, "a/*.txt", t.path(), "/out/", &wild).expect("copy");
        let out = t.path().join("out");
        assert_eq!(fs::read_to_string(out.join("one.txt")).expect("r"), "1");
        assert_eq!(fs::read_to_string(out.join("two.txt")).expect("r"), "2");
        assert!(!out.join("three.md").exists());
        // Without a `/`, every match is copied onto the same path (BuildKit): the last one stays.
        copy(src, "a/*.txt", t.path(), "/last", &wild).expect("copy");
        assert_eq!(fs::read_to_string(t.path().join("last")).expect("r"), "2");
        // A directory match copies its contents; a single file into a `/` dest lands inside.
        copy(src, "a/c?nf", t.path(), "/conf", &wild).expect("copy dir");
        assert!(t.path().join("conf/x.txt").exists());
        copy(src, "a/three.md", t.path(), "/docs/", &wild).expect("copy into dir");
        assert!(t.path().join("docs/three.md").is_file());
        assert!(matches!(
            copy(src, "a/*.rs", t.path(), "/x", &wild),
            Err(FsError::NotFound { .. })
        ));

        // A gzipped tar is extracted with `unpack_archive`, copied as a file without.
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_ustar();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "inside/hello", &b"hello"[..])
            .expect("append");
        let gz = builder.into_inner().expect("tar").finish().expect("gz");
        fs::write(src.join("a.tar.gz"), gz).expect("w");
        let unpack = CopyOptions {
            unpack_archive: true,
            ..Default::default()
        };
        copy(src, "a.tar.gz", t.path(), "/x/", &unpack).expect("unpack");
        assert_eq!(
            fs::read_to_string(t.path().join("x/inside/hello")).expect("r"),
            "hello"
        );
        copy(src, "a/one.txt", t.path(), "/y/", &unpack).expect("plain file");
        assert!(t.path().join("y/one.txt").is_file());
        copy(src, "a.tar.gz", t.path(), "/z/", &CopyOptions::default()).expect("copied");
        assert!(t.path().join("z/a.tar.gz").is_file());
    }

    #[test]
    fn copy_tree_with_patterns_keeps_metadata() {
        let s = tempfile::tempdir().expect("tmp");
        let t = tempfile::tempdir().expect("tmp");
        let src = s.path();
        fs::create_dir_all(src.join("dir/src/deep")).expect("mkdir");
        fs::create_dir_all(src.join("dir/node_modules/m")).expect("mkdir");
        fs::create_dir_all(src.join("dir/empty")).expect("mkdir");
        fs::write(src.join("dir/src/deep/a.rs"), "a").expect("w");
        fs::write(src.join("dir/node_modules/m/x"), "x").expect("w");
        fs::write(src.join("dir/README.md"), "r").expect("w");
        fs::set_permissions(src.join("dir/README.md"), fs::Permissions::from_mode(0o751))
            .expect("chmod");
        std::os::unix::fs::symlink("src/deep/a.rs", src.join("dir/link")).expect("link");
        filetime::set_file_mtime(
            src.join("dir/README.md"),
            filetime::FileTime::from_unix_time(1000, 0),
        )
        .expect("mtime");

        let stats = copy(
            src,
            "/dir",
            t.path(),
            "/out",
            &CopyOptions {
                exclude: vec!["node_modules".into()],
                ..Default::default()
            },
        )
        .expect("copy");
        let out = t.path().join("out");
        assert_eq!(
            fs::read_to_string(out.join("src/deep/a.rs")).expect("r"),
            "a"
        );
        assert!(!out.join("node_modules").exists());
        assert!(out.join("empty").is_dir());
        assert_eq!(
            fs::read_link(out.join("link")).expect("link"),
            Path::new("src/deep/a.rs")
        );
        let md = fs::metadata(out.join("README.md")).expect("md");
        assert_eq!(md.mode() & 0o777, 0o751);
        assert_eq!(md.mtime(), 1000);
        assert_eq!(stats.files, 3);

        let t2 = tempfile::tempdir().expect("tmp");
        copy(
            src,
            "/dir",
            t2.path(),
            "/",
            &CopyOptions {
                include: vec!["**/*.rs".into()],
                ..Default::default()
            },
        )
        .expect("copy include");
        assert!(t2.path().join("src/deep/a.rs").exists());
        assert!(!t2.path().join("README.md").exists());
        assert!(
            !t2.path().join("empty").exists(),
            "dirs without included entries are not created"
        );

        copy(
            src,
            "/dir/README.md",
            t2.path(),
            "/new/name.md",
            &CopyOptions::default(),
        )
        .expect("file");
        assert_eq!(
            fs::read_to_string(t2.path().join("new/name.md")).expect("r"),
            "r"
        );
    }

    #[test]
    fn mkdir_gives_created_directories_the_mode_and_owner_only() {
        let d = tempfile::tempdir().expect("tmp");
        let root = d.path();
        fs::create_dir(root.join("tmp")).expect("mkdir");
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
        let owner = Some(Owner {
            uid: 1000,
            gid: 1001,
        });
        mkdir(root, "/home/u/project", 0o750, true, owner).expect("mkdir");
        for created in ["home", "home/u", "home/u/project"] {
            let md = fs::metadata(root.join(created)).expect("md");
            assert_eq!(
                (md.mode() & 0o7777, md.uid(), md.gid()),
                (0o750, 1000, 1001),
                "{created}"
            );
        }
        // Existing directories keep their mode and owner, with or without parents.
        mkdir(root, "/tmp", 0o755, true, owner).expect("existing");
        mkdir(root, "/tmp", 0o755, false, owner).expect("existing");
        let md = fs::metadata(root.join("tmp")).expect("md");
        assert_eq!((md.mode() & 0o7777, md.uid()), (0o1777, 0));
        mkdir(root, "/tmp/new", 0o700, false, owner).expect("one level");
        let md = fs::metadata(root.join("tmp/new")).expect("md");
        assert_eq!((md.mode() & 0o7777, md.uid()), (0o700, 1000));
    }

    #[test]
    fn copy_owner_and_mode_apply_to_created_and_copied_directories() {
        let s = tempfile::tempdir().expect("tmp");
        let t = tempfile::tempdir().expect("tmp");
        let (src, dst) = (s.path(), t.path());
        fs::create_dir_all(src.join("dir/sub")).expect("mkdir");
        fs::write(src.join("dir/sub/f"), "f").expect("w");
        fs::write(src.join("file"), "x").expect("w");
        fs::create_dir(dst.join("existing")).expect("mkdir");
        let opts = CopyOptions {
            owner: Some(Owner { uid: 7, gid: 8 }),
            mode: Some(0o700),
            ..Default::default()
        };
        let meta = |p: &str| {
            let md = fs::symlink_metadata(dst.join(p)).expect(p);
            (md.mode() & 0o7777, md.uid(), md.gid())
        };
        // An existing destination directory is left as it is; what is copied gets both.
        copy(src, "/dir", dst, "/existing/", &opts).expect("copy");
        assert_eq!(meta("existing"), (0o755, 0, 0));
        assert_eq!(meta("existing/sub"), (0o700, 7, 8));
        assert_eq!(meta("existing/sub/f"), (0o700, 7, 8));
        // Created destination directories, for a file or a directory, get both too.
        copy(src, "/file", dst, "/new/deeper/", &opts).expect("copy");
        assert_eq!(meta("new"), (0o700, 7, 8));
        assert_eq!(meta("new/deeper"), (0o700, 7, 8));
        copy(src, "/dir", dst, "/tree", &opts).expect("copy");
        assert_eq!(meta("tree"), (0o700, 7, 8));
        let owned = CopyOptions {
            owner: Some(Owner { uid: 7, gid: 8 }),
            ..Default::default()
        };
        copy(src, "/file", dst, "/other/name", &owned).expect("copy");
        assert_eq!(meta("other"), (0o755, 7, 8));
        assert_eq!(meta("other/name").1, 7);
    }
}
