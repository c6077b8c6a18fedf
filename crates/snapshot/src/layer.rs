//! Applying an OCI tar layer (plain, gzip or zstd, detected by magic bytes) onto a directory tree:
//! [`apply_layer`]. Whiteouts (`.wh.name`) delete, opaque markers (`.wh..wh..opq`) hide what lower
//! layers put in a directory; modes, owners, mtimes, xattrs, symlinks, hard links and device nodes
//! are restored.
//!
//! Nothing escapes the tree: `..` is refused, absolute paths are made relative, every parent
//! component is opened with `O_NOFOLLOW` (a symlink on the way is an error), hard links must point
//! inside the tree, and declared file sizes are bounded ([`ApplyOptions`]) before anything is written.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use sha2::{Digest as _, Sha256};

use crate::beneath::{self, ResolveError};
use crate::digest::Digest;

/// Errors applying a layer. Entry paths are shown as found in the archive.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {path:?} is unsafe: {reason}")]
    UnsafePath { path: String, reason: String },
    #[error("layer entry {path:?} declares {size} bytes, more than the limit of {limit} bytes")]
    EntryTooLarge { path: String, size: u64, limit: u64 },
    #[error(
        "layer declares {total} bytes of file data by entry {path:?}, more than the limit of {limit} bytes"
    )]
    TotalTooLarge {
        path: String,
        total: u64,
        limit: u64,
    },
    #[error(
        "layer declares {total} bytes of file data by entry {path:?}, more than the {available} bytes free under {root}"
    )]
    NotEnoughSpace {
        path: String,
        total: u64,
        available: u64,
        root: PathBuf,
    },
    #[error("layer entry {path:?} declares {size} bytes but its data ends after {actual} bytes")]
    Truncated {
        path: String,
        size: u64,
        actual: u64,
    },
    #[error("hard link {path:?} points to {target:?}, which does not exist in the tree")]
    LinkTargetMissing { path: String, target: String },
    #[error("layer entry {path:?} has unsupported type {kind}")]
    UnsupportedEntry { path: String, kind: String },
    #[error("layer entry {path:?}: {op} failed: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("layer has more than {limit} entries (at entry {path:?})")]
    TooManyEntries { path: String, limit: u64 },
    #[error("layer continues for more than {limit} bytes after its end-of-archive marker")]
    TrailingData { limit: u64 },
    #[error("reading layer archive: {0}")]
    Read(std::io::Error),
    #[error("opening layer target {path}: {source}")]
    Target {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Compression of a layer blob, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Detects gzip (`1f 8b`) and zstd (`28 b5 2f fd`); anything else is taken as plain tar.
    pub fn detect(prefix: &[u8]) -> Self {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI media type of a layer blob compressed so.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => crate::diff::LAYER_MEDIA_TYPE_GZIP,
            Compression::Zstd => crate::diff::LAYER_MEDIA_TYPE_ZSTD,
        }
    }
}

/// Bounds on what a layer may declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Largest regular file (declared size, sparse files by their full size). Default 8 GiB.
    pub max_entry_bytes: u64,
    /// Largest sum of declared file sizes. Default 32 GiB.
    pub max_total_bytes: u64,
    /// Also refuse a layer whose declared file data exceeds the free space of the target filesystem.
    pub check_free_space: bool,
    /// Most entries (of any type) in one layer. Default 1,000,000.
    pub max_entries: u64,
}

/// Most bytes accepted after the end-of-archive marker (tar pads to 10 KiB records).
pub const MAX_TRAILER_BYTES: u64 = 1 << 20;

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            max_entry_bytes: 8 << 30,
            max_total_bytes: 32 << 30,
            check_free_space: true,
            max_entries: 1_000_000,
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the uncompressed tar stream (the layer's diff id).
    pub diff_id: Digest,
    pub compression: Compression,
    /// Entries in the archive (including whiteouts).
    pub entries: u64,
    /// Bytes of regular file data written.
    pub file_bytes: u64,
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Whether the stream read from `reader` is a tar archive, plain or compressed (what
/// Dockerfile `ADD` extracts): its first block, decompressed, is a tar header (the `ustar`
/// magic, or an old-style header whose checksum holds).
pub fn is_tar_archive<R: Read>(reader: R) -> std::io::Result<bool> {
    let mut buffered = BufReader::with_capacity(64 * 1024, reader);
    let compression = Compression::detect(buffered.fill_buf()?);
    let mut decoded: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    };
    let mut block = [0u8; 512];
    let mut filled = 0;
    while filled < block.len() {
        match decoded.read(&mut block[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            // Compressed data that does not decode is not an archive.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(is_tar_header(&block))
}

fn is_tar_header(block: &[u8; 512]) -> bool {
    if &block[257..262] == b"ustar" {
        return true;
    }
    // Old-style (v7) header: the checksum field (octal, at 148..156) is the sum of the header's
    // bytes with the field itself counted as spaces.
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| ('0'..='7').contains(c))
        .collect();
    let Ok(stored) = u32::from_str_radix(&digits, 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    block[0] != 0 && stored == sum
}

/// Applies the layer read from `reader` onto the directory `root` (a prepared snapshot, mounted
/// or plain). Blocking: run it on a blocking thread.
pub fn apply_layer<R: Read>(
    reader: R,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let compression = Compression::detect(buffered.fill_buf().map_err(LayerError::Read)?);
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(LayerError::Read)?)
        }
    };
    let hashing = HashingReader {
        inner: decoded,
        hasher: Sha256::new(),
    };
    let target_err = |source: std::io::Error| LayerError::Target {
        path: root.to_owned(),
        source,
    };
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| target_err(e.into()))?;
    let available = if opts.check_free_space {
        let st = rustix::fs::fstatvfs(&root_fd).map_err(|e| target_err(e.into()))?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    } else {
        None
    };
    let mut applier = Applier {
        root: root.to_owned(),
        root_fd,
        opts,
        available,
        written: HashSet::new(),
        dir_times: Vec::new(),
        declared_total: 0,
        file_bytes: 0,
        entries: 0,
    };
    let mut archive = tar::Archive::new(hashing);
    for entry in archive.entries().map_err(LayerError::Read)? {
        let entry = entry.map_err(LayerError::Read)?;
        applier.entries += 1;
        if applier.entries > opts.max_entries {
            return Err(LayerError::TooManyEntries {
                path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                limit: opts.max_entries,
            });
        }
        applier.apply_entry(entry)?;
    }
    applier.finish_dir_times()?;
    let mut hashing = archive.into_inner();
    // The diff id covers the whole uncompressed stream, including the end-of-archive padding;
    // a long tail after the archive is refused rather than decompressed without end.
    let tail = std::io::copy(
        &mut (&mut hashing).take(MAX_TRAILER_BYTES + 1),
        &mut std::io::sink(),
    )
    .map_err(LayerError::Read)?;
    if tail > MAX_TRAILER_BYTES {
        return Err(LayerError::TrailingData {
            limit: MAX_TRAILER_BYTES,
        });
    }
    Ok(ApplyStats {
        diff_id: Digest::from_hasher(hashing.hasher),
        compression,
        entries: applier.entries,
        file_bytes: applier.file_bytes,
    })
}

/// Splits an archive path into safe components: leading `/` and `.` dropped, `..` refused.
fn normalize(raw: &[u8]) -> Result<Vec<&OsStr>, String> {
    let mut comps = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains `..`".to_owned()),
            c => comps.push(OsStr::from_bytes(c)),
        }
    }
    Ok(comps)
}

fn join(comps: &[&OsStr]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_bytes());
    }
    out
}

struct Applier<'o> {
    root: PathBuf,
    root_fd: OwnedFd,
    opts: &'o ApplyOptions,
    available: Option<u64>,
    /// Paths (joined components) this layer created or replaced, and their ancestors.
    written: HashSet<Vec<u8>>,
    /// Directory mtimes to set once all children are in place.
    dir_times: Vec<(Vec<OsString>, u64)>,
    declared_total: u64,
    file_bytes: u64,
    entries: u64,
}

impl Applier<'_> {
    fn resolve_err(&self, path: &str, e: ResolveError) -> LayerError {
        match e {
            ResolveError::Symlink(at) => LayerError::UnsafePath {
                path: path.to_owned(),
                reason: format!("parent component {at:?} is a symlink, which is never followed"),
            },
            ResolveError::NotDirectory(at) => LayerError::UnsafePath {
                path: path.to_owned(),
                reason: format!("parent component {at:?} is not a directory"),
            },
            ResolveError::Missing => LayerError::Io {
                path: path.to_owned(),
                op: "resolve parent",
                source: std::io::ErrorKind::NotFound.into(),
            },
            ResolveError::Io(source) => LayerError::Io {
                path: path.to_owned(),
                op: "resolve parent",
                source,
            },
        }
    }

    fn mark_written(&mut self, comps: &[&OsStr]) {
        for i in 1..=comps.len() {
            self.written.insert(join(&comps[..i]));
        }
    }

    fn apply_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw_path = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw_path).into_owned();
        let comps = normalize(&raw_path).map_err(|reason| LayerError::UnsafePath {
            path: path.clone(),
            reason,
        })?;
        let Some((&name, parent)) = comps.split_last() else {
            // The root itself ("./"): nothing to create.
            return Ok(());
        };
        let io = |op: &'static str| {
            let path = path.clone();
            move |e: rustix::io::Errno| LayerError::Io {
                path,
                op,
                source: e.into(),
            }
        };
        let header = entry.header().clone();
        let kind = header.entry_type();

        if comps[0].as_bytes().starts_with(b".wh..wh.") && comps != [OsStr::new(".wh..wh..opq")] {
            // aufs bookkeeping at the top level (`.wh..wh.plnk`, `.wh..wh.aufs`): skipped, as by
            // containerd.
            return Ok(());
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") {
            if hidden == b".wh..opq" {
                let dir = beneath::open_dir(self.root_fd.as_fd(), parent, true)
                    .map_err(|e| self.resolve_err(&path, e))?;
                let prefix = join(parent);
                let written = &self.written;
                beneath::clear_dir(dir.as_fd(), &|child| {
                    let mut p = prefix.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(child.as_bytes());
                    !written.contains(&p)
                })
                .map_err(|source| LayerError::Io {
                    path: path.clone(),
                    op: "apply opaque marker",
                    source,
                })?;
                self.mark_written(parent);
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                return Err(LayerError::UnsafePath {
                    path,
                    reason: "invalid whiteout name".to_owned(),
                });
            }
            let dir = match beneath::open_dir(self.root_fd.as_fd(), parent, false) {
                Ok(d) => d,
                // Nothing to hide.
                Err(ResolveError::Missing) => return Ok(()),
                Err(e) => return Err(self.resolve_err(&path, e)),
            };
            beneath::remove_at(dir.as_fd(), OsStr::from_bytes(hidden)).map_err(|source| {
                LayerError::Io {
                    path: path.clone(),
                    op: "apply whiteout",
                    source,
                }
            })?;
            return Ok(());
        }

        let is_file = matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
        );
        if is_file {
            let size = entry.size();
            if size > self.opts.max_entry_bytes {
                return Err(LayerError::EntryTooLarge {
                    path,
                    size,
                    limit: self.opts.max_entry_bytes,
                });
            }
            self.declared_total = self.declared_total.saturating_add(size);
            if self.declared_total > self.opts.max_total_bytes {
                return Err(LayerError::TotalTooLarge {
                    path,
                    total: self.declared_total,
                    limit: self.opts.max_total_bytes,
                });
            }
            if let Some(available) = self.available
                && self.declared_total > available
            {
                return Err(LayerError::NotEnoughSpace {
                    path,
                    total: self.declared_total,
                    available,
                    root: self.root.clone(),
                });
            }
        }
        match kind {
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => return Ok(()),
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::GNUSparse
            | tar::EntryType::Directory
            | tar::EntryType::Symlink
            | tar::EntryType::Link
            | tar::EntryType::Char
            | tar::EntryType::Block
            | tar::EntryType::Fifo => {}
            other => {
                return Err(LayerError::UnsupportedEntry {
                    path,
                    kind: format!("{other:?}"),
                });
            }
        }

        let dir = beneath::open_dir(self.root_fd.as_fd(), parent, true)
            .map_err(|e| self.resolve_err(&path, e))?;
        let existing =
            beneath::file_type_at(dir.as_fd(), name).map_err(|source| LayerError::Io {
                path: path.clone(),
                op: "stat",
                source,
            })?;
        let link_target = if kind == tar::EntryType::Link {
            let raw = entry
                .link_name_bytes()
                .ok_or_else(|| LayerError::UnsafePath {
                    path: path.clone(),
                    reason: "hard link without target".into(),
                })?
                .into_owned();
            let target = normalize(&raw).map_err(|reason| LayerError::UnsafePath {
                path: path.clone(),
                reason: format!("hard link target: {reason}"),
            })?;
            if target.is_empty() {
                return Err(LayerError::UnsafePath {
                    path,
                    reason: "hard link to the root".into(),
                });
            }
            if target == comps {
                // A link to itself: already in place.
                return Ok(());
            }
            Some(target.iter().map(|c| c.to_os_string()).collect::<Vec<_>>())
        } else {
            None
        };
        match (existing, kind) {
            (None, _) | (Some(FileType::Directory), tar::EntryType::Directory) => {}
            (Some(_), _) => {
                beneath::remove_at(dir.as_fd(), name).map_err(|source| LayerError::Io {
                    path: path.clone(),
                    op: "replace existing entry",
                    source,
                })?
            }
        }

        let old = header.as_old();
        let mode =
            Mode::from_raw_mode(numeric(header.mode().map(u64::from), &old.mode)? as u32 & 0o7777);
        let uid = numeric(header.uid(), &old.uid)?;
        let gid = numeric(header.gid(), &old.gid)?;
        let owner = (
            u32::try_from(uid)
                .ok()
                .filter(|u| *u != u32::MAX)
                .map(Uid::from_raw),
            u32::try_from(gid)
                .ok()
                .filter(|g| *g != u32::MAX)
                .map(Gid::from_raw),
        );
        let mtime = numeric(header.mtime(), &old.mtime)?;
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: mtime as i64,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: mtime as i64,
                tv_nsec: 0,
            },
        };
        let xattrs = read_xattrs(&mut entry).map_err(LayerError::Read)?;

        match kind {
            tar::EntryType::Directory => {
                if existing != Some(FileType::Directory) {
                    rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                        .map_err(io("mkdir"))?;
                }
                let fd = rustix::fs::openat(&dir, name, beneath::DIR_FLAGS, Mode::empty())
                    .map_err(io("open dir"))?;
                rustix::fs::fchown(&fd, owner.0, owner.1).map_err(io("chown"))?;
                rustix::fs::fchmod(&fd, mode).map_err(io("chmod"))?;
                set_xattrs(&fd, &xattrs, &path)?;
                let mut all: Vec<OsString> = parent.iter().map(|c| c.to_os_string()).collect();
                all.push(name.to_os_string());
                self.dir_times.push((all, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io("create file"))?;
                let mut file = std::fs::File::from(fd);
                let size = entry.size();
                let actual =
                    std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(|source| {
                        LayerError::Io {
                            path: path.clone(),
                            op: "write file data",
                            source,
                        }
                    })?;
                if actual != size {
                    return Err(LayerError::Truncated { path, size, actual });
                }
                self.file_bytes += actual;
                rustix::fs::fchown(&file, owner.0, owner.1).map_err(io("chown"))?;
                rustix::fs::fchmod(&file, mode).map_err(io("chmod"))?;
                set_xattrs(&file, &xattrs, &path)?;
                rustix::fs::futimens(&file, &times).map_err(io("set times"))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::UnsafePath {
                        path: path.clone(),
                        reason: "symlink without target".into(),
                    })?
                    .into_owned();
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, name)
                    .map_err(io("symlink"))?;
                rustix::fs::chownat(&dir, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io("chown"))?;
                rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io("set times"))?;
            }
            tar::EntryType::Link => {
                let target = link_target.unwrap_or_default();
                let target_refs: Vec<&OsStr> = target.iter().map(|c| c.as_os_str()).collect();
                let shown = String::from_utf8_lossy(&join(&target_refs)).into_owned();
                let Some((tname, tparent)) = target_refs.split_last() else {
                    return Err(LayerError::UnsafePath {
                        path,
                        reason: "hard link to the root".into(),
                    });
                };
                let tdir = match beneath::open_dir(self.root_fd.as_fd(), tparent, false) {
                    Ok(d) => d,
                    Err(ResolveError::Missing) => {
                        return Err(LayerError::LinkTargetMissing {
                            path,
                            target: shown,
                        });
                    }
                    Err(ResolveError::Symlink(at)) => {
                        return Err(LayerError::UnsafePath {
                            path,
                            reason: format!(
                                "hard link target {shown:?} goes through symlink {at:?}"
                            ),
                        });
                    }
                    Err(e) => return Err(self.resolve_err(&path, e)),
                };
                match rustix::fs::linkat(&tdir, *tname, &dir, name, AtFlags::empty()) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::NOENT) => {
                        return Err(LayerError::LinkTargetMissing {
                            path,
                            target: shown,
                        });
                    }
                    Err(e) => return Err(io("hard link")(e)),
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let major = header
                    .device_major()
                    .map_err(LayerError::Read)?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(LayerError::Read)?
                    .unwrap_or(0);
                match rustix::fs::mknodat(
                    &dir,
                    name,
                    file_type,
                    mode,
                    rustix::fs::makedev(major, minor),
                ) {
                    Ok(()) => {}
                    // Device nodes need CAP_MKNOD: without it they are skipped, as by containerd.
                    Err(rustix::io::Errno::PERM) if file_type != FileType::Fifo => {
                        tracing::warn!(path, "no permission to create a device node, skipped");
                        return Ok(());
                    }
                    Err(e) => return Err(io("mknod")(e)),
                }
                rustix::fs::chownat(&dir, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io("chown"))?;
                // mknod applies the umask; the node is not a symlink, so chmodat is safe here.
                rustix::fs::chmodat(&dir, name, mode, AtFlags::empty()).map_err(io("chmod"))?;
                rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io("set times"))?;
            }
            _ => {}
        }
        self.mark_written(&comps);
        Ok(())
    }

    fn finish_dir_times(&mut self) -> Result<(), LayerError> {
        // Deepest first, so setting a parent's time is not undone by nothing later.
        let mut dirs = std::mem::take(&mut self.dir_times);
        dirs.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        for (comps, mtime) in dirs {
            let refs: Vec<&OsStr> = comps.iter().map(|c| c.as_os_str()).collect();
            // A directory removed or replaced by a later entry is skipped.
            let Ok(fd) = beneath::open_dir(self.root_fd.as_fd(), &refs, false) else {
                continue;
            };
            let t = Timespec {
                tv_sec: mtime as i64,
                tv_nsec: 0,
            };
            rustix::fs::futimens(
                &fd,
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            )
            .map_err(|e| LayerError::Io {
                path: String::from_utf8_lossy(&join(&refs)).into_owned(),
                op: "set directory times",
                source: e.into(),
            })?;
        }
        Ok(())
    }
}

/// A numeric header field; an empty one (all NULs or spaces) reads as 0, as Go's archive/tar does.
fn numeric(parsed: std::io::Result<u64>, raw: &[u8]) -> Result<u64, LayerError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(LayerError::Read(e)),
    }
}

fn read_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn set_xattrs(fd: impl AsFd, xattrs: &[(Vec<u8>, Vec<u8>)], path: &str) -> Result<(), LayerError> {
    for (name, value) in xattrs {
        match rustix::fs::fsetxattr(
            &fd,
            OsStr::from_bytes(name),
            value,
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOTSUP) => {
                tracing::warn!(path, xattr = %String::from_utf8_lossy(name), "xattr not supported, skipped");
            }
            Err(e) => {
                return Err(LayerError::Io {
                    path: path.to_owned(),
                    op: "set xattr",
                    source: e.into(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_and_refuses() {
        assert_eq!(
            normalize(b"/etc/./x").unwrap(),
            vec![OsStr::new("etc"), OsStr::new("x")]
        );
        assert_eq!(normalize(b"./").unwrap(), Vec::<&OsStr>::new());
        assert!(normalize(b"a/../../etc").is_err());
        assert!(normalize(b"..").is_err());
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"etc/"), Compression::None);
    }
}
