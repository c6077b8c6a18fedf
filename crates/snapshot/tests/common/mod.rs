//! Helpers shared by the integration tests: building tar layers and describing trees.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Builds a tar layer in memory, including entries the tar crate's safe setters would refuse.
pub struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_gnu_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(path, tar::EntryType::Directory, mode, 0);
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn file(self, path: &str, content: &[u8], mode: u32) -> Self {
        self.file_owned(path, content, mode, 0, 0)
    }

    pub fn file_owned(mut self, path: &str, content: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(path, tar::EntryType::Regular, mode, content.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.builder.append(&h, content).unwrap();
        self
    }

    /// A file header declaring `declared` bytes followed by only `actual` bytes of data.
    pub fn file_declaring(mut self, path: &str, declared: u64, actual: usize) -> Self {
        let mut h = Self::header(path, tar::EntryType::Regular, 0o644, declared);
        h.set_cksum();
        self.builder.append(&h, &vec![b'x'; actual][..]).unwrap();
        self
    }

    /// A GNU sparse file claiming `real_size` bytes with one 512-byte data block at its end.
    pub fn sparse_bomb(mut self, path: &str, real_size: u64) -> Self {
        let mut h = Self::header(path, tar::EntryType::GNUSparse, 0o644, 512);
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.set_real_size(real_size);
            let block = &mut gnu.sparse[0];
            block.set_offset(real_size - 512);
            block.set_length(512);
        }
        h.set_cksum();
        self.builder.append(&h, &[b'y'; 512][..]).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(path, tar::EntryType::Symlink, 0o777, 0);
        h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(path, tar::EntryType::Link, 0o644, 0);
        h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn device(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = Self::header(path, kind, 0o620, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let path = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&path, b"", 0o644)
    }

    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    pub fn tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }

    pub fn gzip(self) -> Vec<u8> {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&self.tar()).unwrap();
        enc.finish().unwrap()
    }

    pub fn zstd(self) -> Vec<u8> {
        zstd::encode_all(&self.tar()[..], 1).unwrap()
    }
}

/// A comparable description of a tree: path -> "type mode uid:gid size/target/content-hash [nlink-group]".
pub fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let desc = if ft.is_symlink() {
            format!("symlink -> {}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_dir() {
            format!(
                "dir {:o} {}:{} mtime={}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                m.mtime()
            )
        } else if ft.is_file() {
            let content = std::fs::read(&p).unwrap();
            format!(
                "file {:o} {}:{} nlink={} mtime={} {:?}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                m.nlink(),
                m.mtime(),
                String::from_utf8_lossy(&content[..content.len().min(64)])
            )
        } else {
            format!("special {:o} rdev={}", m.mode(), m.rdev())
        };
        out.insert(rel, desc);
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

/// A temp dir whose mounts are detached (even if a test fails) before it is deleted.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn subdir(&self, name: &str) -> std::path::PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Mount points left under this dir.
    pub fn leftover_mounts(&self) -> Vec<std::path::PathBuf> {
        let canon = std::fs::canonicalize(self.dir.path()).unwrap();
        dagr_snapshot::mount::mounts_under(&canon).unwrap()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Ok(canon) = std::fs::canonicalize(self.dir.path())
            && let Ok(mounts) = dagr_snapshot::mount::mounts_under(&canon)
        {
            for m in mounts {
                let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}
