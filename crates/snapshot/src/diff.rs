//! Diffs: a snapshot against its parent as an OCI layer (tar + gzip) written into the
//! [`ContentStore`]: [`Snapshotter::diff`].
//!
//! On the overlay backend the snapshot's own directory *is* the change set: overlay whiteouts
//! (0:0 character devices) become `.wh.<name>` entries and opaque directories
//! (`trusted.overlay.opaque=y`) get a `.wh..wh..opq` marker. On the copy backend the snapshot's
//! tree is compared with its parent's (type, mode, owner, size, mtime, link target, device, and
//! content when mtimes have no sub-second part) and deletions become `.wh.<name>` entries.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read as _, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::content::{ContentError, ContentStore, SyncBlobWriter};
use crate::digest::Digest;
use crate::fsutil;
use crate::layer::Compression;
use crate::snapshotter::{Backend, Kind, SnapshotError, Snapshotter};

/// Media type of the layers [`Snapshotter::diff`] writes.
pub const LAYER_MEDIA_TYPE_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Errors computing a diff.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("diffing snapshot {key:?} at {path}: {source}")]
    Io {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A layer written by [`Snapshotter::diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLayer {
    /// Digest of the compressed blob (in the content store).
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    pub media_type: &'static str,
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Media type of the zstd layers [`Snapshotter::diff_with`] writes.
pub const LAYER_MEDIA_TYPE_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

enum Compressor {
    None(SyncBlobWriter),
    Gzip(flate2::write::GzEncoder<SyncBlobWriter>),
    Zstd(zstd::stream::write::Encoder<'static, SyncBlobWriter>),
}

impl Compressor {
    fn finish(self) -> std::io::Result<SyncBlobWriter> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
        }
    }
}

type Sink = HashingWriter<Compressor>;

struct Emitter {
    builder: tar::Builder<Sink>,
    /// First archive path of each multiply-linked inode.
    links: HashMap<(u64, u64), String>,
    /// Unchanged directories on the current path, emitted only once something below them is (so
    /// that applying the layer restores their metadata after touching their children).
    pending_dirs: Vec<(String, PathBuf, std::fs::Metadata, bool)>,
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n" where <len> counts the whole record including its own digits.
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} ").into_bytes();
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

impl Emitter {
    fn header(kind: tar::EntryType, m: Option<&std::fs::Metadata>) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        if let Some(m) = m {
            h.set_mode(m.mode() & 0o7777);
            h.set_uid(m.uid() as u64);
            h.set_gid(m.gid() as u64);
            h.set_mtime(m.mtime().max(0) as u64);
        } else {
            h.set_mode(0o644);
            h.set_mtime(0);
        }
        h
    }

    fn xattrs(&mut self, rel: &str, abs: &Path) -> std::io::Result<()> {
        let mut data = Vec::new();
        for (name, value) in fsutil::read_xattrs(abs)? {
            if name.as_bytes().starts_with(b"trusted.overlay.") {
                continue;
            }
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name.as_bytes());
            data.extend_from_slice(&pax_record(&key, &value));
        }
        if data.is_empty() {
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        let short: String = rel.chars().take(90).collect();
        h.set_path(format!("PaxHeaders/{short}"))
            .or_else(|_| h.set_path("PaxHeaders/entry"))?;
        h.set_cksum();
        self.builder.append(&h, &data[..])
    }

    fn flush_pending(&mut self) -> std::io::Result<()> {
        for i in 0..self.pending_dirs.len() {
            if !self.pending_dirs[i].3 {
                self.pending_dirs[i].3 = true;
                let (rel, abs, m) = (
                    self.pending_dirs[i].0.clone(),
                    self.pending_dirs[i].1.clone(),
                    self.pending_dirs[i].2.clone(),
                );
                self.write_entry(&rel, &abs, &m)?;
            }
        }
        Ok(())
    }

    /// Emits `abs` as archive path `rel`.
    fn entry(&mut self, rel: &str, abs: &Path, m: &std::fs::Metadata) -> std::io::Result<()> {
        self.flush_pending()?;
        self.write_entry(rel, abs, m)
    }

    fn write_entry(&mut self, rel: &str, abs: &Path, m: &std::fs::Metadata) -> std::io::Result<()> {
        let ft = m.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                let mut h = Self::header(tar::EntryType::Link, Some(m));
                let first = first.clone();
                return self.builder.append_link(&mut h, rel, first);
            }
            self.links.insert((m.dev(), m.ino()), rel.to_owned());
        }
        if !ft.is_symlink() {
            self.xattrs(rel, abs)?;
        }
        if ft.is_dir() {
            let mut h = Self::header(tar::EntryType::Directory, Some(m));
            self.builder
                .append_data(&mut h, format!("{rel}/"), std::io::empty())
        } else if ft.is_file() {
            let mut h = Self::header(tar::EntryType::Regular, Some(m));
            h.set_size(m.len());
            let f = std::fs::File::open(abs)?;
            self.builder.append_data(&mut h, rel, f.take(m.len()))
        } else if ft.is_symlink() {
            let mut h = Self::header(tar::EntryType::Symlink, Some(m));
            let target = std::fs::read_link(abs)?;
            self.builder.append_link(&mut h, rel, target)
        } else {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            let mut h = Self::header(kind, Some(m));
            let rdev = m.rdev();
            h.set_device_major(rustix::fs::major(rdev))?;
            h.set_device_minor(rustix::fs::minor(rdev))?;
            self.builder.append_data(&mut h, rel, std::io::empty())
        }
    }

    fn whiteout(&mut self, dir_rel: &str, name: &str) -> std::io::Result<()> {
        self.flush_pending()?;
        let mut h = Self::header(tar::EntryType::Regular, None);
        self.builder.append_data(
            &mut h,
            join_rel(dir_rel, &format!(".wh.{name}")),
            std::io::empty(),
        )
    }
}

fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn sorted_names(dir: &Path) -> std::io::Result<Vec<std::ffi::OsString>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut buf[..]), Ok(1) if buf[0] == b'y')
}

/// Overlay upper dir: the directory holds exactly the changes.
fn walk_upper(
    em: &mut Emitter,
    dir: &Path,
    rel: &str,
    convert_whiteouts: bool,
) -> std::io::Result<()> {
    for name in sorted_names(dir)? {
        let abs = dir.join(&name);
        let name_s = name.to_string_lossy().into_owned();
        let m = std::fs::symlink_metadata(&abs)?;
        if convert_whiteouts && m.file_type().is_char_device() && m.rdev() == 0 {
            em.whiteout(rel, &name_s)?;
            continue;
        }
        let child_rel = join_rel(rel, &name_s);
        em.entry(&child_rel, &abs, &m)?;
        if m.is_dir() {
            if convert_whiteouts && is_opaque(&abs) {
                em.whiteout(&child_rel, ".wh..opq")?;
            }
            walk_upper(em, &abs, &child_rel, convert_whiteouts)?;
        }
    }
    Ok(())
}

fn same_entry(
    new: &Path,
    nm: &std::fs::Metadata,
    old: &Path,
    om: &std::fs::Metadata,
) -> std::io::Result<bool> {
    let (nt, ot) = (nm.file_type(), om.file_type());
    let same_kind = (nt.is_file() && ot.is_file())
        || (nt.is_symlink() && ot.is_symlink())
        || (nt.is_char_device() && ot.is_char_device())
        || (nt.is_block_device() && ot.is_block_device())
        || (nt.is_fifo() && ot.is_fifo())
        || (nt.is_socket() && ot.is_socket());
    if !same_kind || nm.mode() != om.mode() || nm.uid() != om.uid() || nm.gid() != om.gid() {
        return Ok(false);
    }
    if nt.is_symlink() {
        return Ok(std::fs::read_link(new)? == std::fs::read_link(old)?);
    }
    if nt.is_char_device() || nt.is_block_device() {
        return Ok(nm.rdev() == om.rdev());
    }
    if nt.is_file() {
        if nm.len() != om.len() || nm.mtime() != om.mtime() || nm.mtime_nsec() != om.mtime_nsec() {
            return Ok(false);
        }
        if nm.mtime_nsec() == 0 {
            // Times from tar archives have whole seconds: a rewrite within that second would
            // not show, so compare content.
            return same_content(new, old);
        }
    }
    Ok(true)
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let mut fa = std::io::BufReader::new(std::fs::File::open(a)?);
    let mut fb = std::io::BufReader::new(std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Copy backend: compare full trees.
fn walk_compare(
    em: &mut Emitter,
    new: &Path,
    old: Option<&Path>,
    rel: &str,
) -> std::io::Result<()> {
    let new_names = sorted_names(new)?;
    let old_names: BTreeSet<std::ffi::OsString> = match old {
        Some(o) => sorted_names(o)?.into_iter().collect(),
        None => BTreeSet::new(),
    };
    let new_set: BTreeSet<&std::ffi::OsString> = new_names.iter().collect();
    for name in old_names.iter().filter(|n| !new_set.contains(n)) {
        em.whiteout(rel, &name.to_string_lossy())?;
    }
    for name in &new_names {
        let abs = new.join(name);
        let child_rel = join_rel(rel, &name.to_string_lossy());
        let nm = std::fs::symlink_metadata(&abs)?;
        let old_abs = old
            .filter(|_| old_names.contains(name))
            .map(|o| o.join(name));
        let om = match &old_abs {
            Some(p) => Some(std::fs::symlink_metadata(p)?),
            None => None,
        };
        if nm.is_dir() {
            let old_dir = match (&old_abs, &om) {
                (Some(p), Some(m)) if m.is_dir() => Some((p, m)),
                _ => None,
            };
            let unchanged = old_dir.is_some_and(|(_, m)| {
                m.mode() == nm.mode()
                    && m.uid() == nm.uid()
                    && m.gid() == nm.gid()
                    && m.mtime() == nm.mtime()
            });
            if unchanged {
                em.pending_dirs
                    .push((child_rel.clone(), abs.clone(), nm, false));
            } else {
                em.entry(&child_rel, &abs, &nm)?;
            }
            walk_compare(em, &abs, old_dir.map(|(p, _)| p.as_path()), &child_rel)?;
            if unchanged {
                em.pending_dirs.pop();
            }
            continue;
        }
        let unchanged = match (&old_abs, &om) {
            (Some(p), Some(m)) => same_entry(&abs, &nm, p, m)?,
            _ => false,
        };
        if !unchanged {
            em.entry(&child_rel, &abs, &nm)?;
        }
    }
    Ok(())
}

impl Snapshotter {
    /// Writes the changes of snapshot `key` (committed, or active and not mounted) against its
    /// parent as a gzip layer into `content`.
    pub async fn diff(&self, content: &ContentStore, key: &str) -> Result<DiffLayer, DiffError> {
        self.diff_with(content, key, Compression::Gzip).await
    }

    /// [`Snapshotter::diff`] with the given compression (zstd is several times faster both
    /// ways: remote cache layers, which only engines read).
    pub async fn diff_with(
        &self,
        content: &ContentStore,
        key: &str,
        compression: Compression,
    ) -> Result<DiffLayer, DiffError> {
        let content = content.clone();
        let key = key.to_owned();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let record = inner.record(&key)?;
            if record.kind == Kind::View {
                return Err(DiffError::Snapshot(SnapshotError::WrongKind {
                    key,
                    kind: Kind::View,
                    expected: "active or committed",
                }));
            }
            let own = inner.fs_dir(record.id);
            let parent_dir = match &record.parent {
                Some(p) => Some(inner.fs_dir(inner.record(p)?.id)),
                None => None,
            };
            let blob = content.sync_writer()?;
            let compressor = match compression {
                Compression::None => Compressor::None(blob),
                Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                    blob,
                    flate2::Compression::default(),
                )),
                Compression::Zstd => Compressor::Zstd(
                    zstd::stream::write::Encoder::new(blob, 3).map_err(|source| DiffError::Io {
                        key: key.clone(),
                        path: own.clone(),
                        source,
                    })?,
                ),
            };
            let media_type = compression.media_type();
            let sink = HashingWriter {
                inner: compressor,
                hasher: Sha256::new(),
            };
            let mut em = Emitter {
                builder: tar::Builder::new(sink),
                links: HashMap::new(),
                pending_dirs: Vec::new(),
            };
            em.builder.mode(tar::HeaderMode::Complete);
            let io = |path: &Path| {
                let (key, path) = (key.clone(), path.to_owned());
                move |source| DiffError::Io { key, path, source }
            };
            match (inner.backend(), &parent_dir) {
                (Backend::Overlay, Some(_)) => {
                    walk_upper(&mut em, &own, "", true).map_err(io(&own))?
                }
                (Backend::Overlay, None) | (Backend::Copy, None) => {
                    walk_upper(&mut em, &own, "", false).map_err(io(&own))?
                }
                (Backend::Copy, Some(p)) => {
                    walk_compare(&mut em, &own, Some(p), "").map_err(io(&own))?
                }
            }
            let sink = em.builder.into_inner().map_err(io(&own))?;
            let diff_id = Digest::from_hasher(sink.hasher);
            let blob = sink.inner.finish().map_err(io(&own))?;
            let (digest, size) = blob.commit()?;
            Ok(DiffLayer {
                digest,
                size,
                diff_id,
                media_type,
            })
        })
        .await
        .map_err(|e| DiffError::Snapshot(SnapshotError::Task(e.to_string())))?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::pax_record;

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record(b"SCHILY.xattr.user.k", b"v");
        let s = String::from_utf8(r.clone()).unwrap();
        let (len, _) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), r.len());
        let long = pax_record(b"k", &[b'x'; 95]);
        let s = String::from_utf8(long.clone()).unwrap();
        assert_eq!(
            s.split_once(' ').unwrap().0.parse::<usize>().unwrap(),
            long.len()
        );
    }
}
