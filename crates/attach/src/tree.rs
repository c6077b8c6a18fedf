//! Local filesystem halves of a transfer: [`TreeReader`] turns a local tree (or one file) into
//! packets, [`TreeWriter`] applies packets to a local directory (or one file) and refuses anything
//! that would escape it. Both are synchronous and meant to run on a blocking thread; the async glue
//! ([`spawn_reader`], [`write_stream`]) moves batches between them and a gRPC stream with bounded
//! buffering.
//!
//! What a transfer keeps: regular files (content, holes of sparse files are skipped and recreated),
//! directories (empty ones too), symlinks (never followed inside a tree), permission bits (07777)
//! and mtimes (a directory's after its content). Ownership is sent but not applied: the writer's
//! files belong to the writing process. Sockets, fifos and devices are skipped.
//!
//! Include/exclude patterns (dockerignore-like, `globset`): anchored at the transfer root, `*` does
//! not cross `/`, `**` does, a leading `./` or `/` and a trailing `/` are ignored; a pattern that
//! matches a directory covers everything under it (an excluded directory is not even read); exclude
//! wins over include; directories are sent only if something under them is included. `!` exceptions
//! are not supported.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dagr_pathfilter::{Decision, PathFilter};
use filetime::FileTime;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::proto::{Data, End, Header, Kind, Packet, packet::Item};

/// Size of the data chunks read from files.
pub(crate) const CHUNK_SIZE: usize = 1 << 20;
/// A batch is sent once it holds this many bytes of data (plus at most one more chunk).
const BATCH_BYTES: usize = 1 << 20;
/// A batch is sent once it holds this many packets.
const BATCH_PACKETS: usize = 2048;
/// Batches in flight between a blocking reader/writer thread and the gRPC stream.
const CHANNEL_BATCHES: usize = 2;

/// Why reading or writing a tree failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path} not found")]
    NotFound { path: PathBuf },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} changed while it was read: {detail}")]
    Changed { path: PathBuf, detail: String },
    #[error("invalid pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        source: globset::Error,
    },
    #[error("refused path {path:?} in transfer stream: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("invalid transfer stream: {0}")]
    Protocol(String),
    #[error("transfer stream failed: {0}")]
    Stream(tonic::Status),
    #[error("transfer cancelled: the other side of the stream went away")]
    Cancelled,
    #[error("transfer worker failed: {0}")]
    Worker(String),
}

impl TreeError {
    /// The gRPC status a serving side answers with.
    pub(crate) fn to_status(&self) -> tonic::Status {
        match self {
            TreeError::NotFound { .. } => tonic::Status::not_found(self.to_string()),
            TreeError::NotADirectory { .. } | TreeError::NotAFile { .. } => {
                tonic::Status::failed_precondition(self.to_string())
            }
            TreeError::Pattern { .. } | TreeError::UnsafePath { .. } | TreeError::Protocol(_) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            TreeError::Stream(status) => status.clone(),
            TreeError::Cancelled => tonic::Status::cancelled(self.to_string()),
            _ => tonic::Status::internal(self.to_string()),
        }
    }

    fn read(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            TreeError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            TreeError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    fn write(path: &Path, source: io::Error) -> Self {
        TreeError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What a transfer moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file content sent (holes of sparse files are not sent).
    pub bytes: u64,
}

/// Kind of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// Sockets, fifos, devices: reported by stat, skipped by transfers.
    Other,
}

/// What a stat of a host path returns (a final symlink is not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStat {
    pub kind: EntryKind,
    /// Permission bits (0o7777).
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub uid: u32,
    pub gid: u32,
    /// For symlinks: the target, as stored.
    pub link_target: Option<PathBuf>,
}

impl HostStat {
    pub(crate) fn from_header(header: &Header) -> Self {
        let kind = match Kind::try_from(header.kind) {
            Ok(Kind::Dir) => EntryKind::Dir,
            Ok(Kind::File) => EntryKind::File,
            Ok(Kind::Symlink) => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        HostStat {
            kind,
            mode: header.mode,
            size: header.size,
            mtime_ns: header.mtime_ns,
            uid: header.uid,
            gid: header.gid,
            link_target: (kind == EntryKind::Symlink)
                .then(|| PathBuf::from(OsStr::from_bytes(&header.link_target))),
        }
    }
}

/// Builds the header describing `abs` (already `lstat`ed as `meta`) under the relative name `rel`.
pub(crate) fn header_for(rel: &[u8], abs: &Path, meta: &Metadata) -> Result<Header, TreeError> {
    let file_type = meta.file_type();
    let (kind, link_target) = if file_type.is_dir() {
        (Kind::Dir, Vec::new())
    } else if file_type.is_file() {
        (Kind::File, Vec::new())
    } else if file_type.is_symlink() {
        let target = fs::read_link(abs).map_err(|e| TreeError::read(abs, e))?;
        (Kind::Symlink, target.into_os_string().into_encoded_bytes())
    } else {
        (Kind::Other, Vec::new())
    };
    Ok(Header {
        path: rel.to_vec(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: if kind == Kind::File { meta.len() } else { 0 },
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        kind: kind as i32,
        link_target,
        ctime_ns: meta
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.ctime_nsec()),
        ino: meta.ino(),
        dev: meta.dev(),
    })
}

pub(crate) fn packet(item: Item) -> Packet {
    Packet { item: Some(item) }
}

/// Collects packets into batches and hands full batches to `flush`.
pub(crate) struct Batcher<F: FnMut(Vec<Packet>) -> Result<(), TreeError>> {
    flush: F,
    packets: Vec<Packet>,
    bytes: usize,
}

impl<F: FnMut(Vec<Packet>) -> Result<(), TreeError>> Batcher<F> {
    pub(crate) fn new(flush: F) -> Self {
        Batcher {
            flush,
            packets: Vec::new(),
            bytes: 0,
        }
    }

    pub(crate) fn push(&mut self, packet: Packet) -> Result<(), TreeError> {
        self.bytes += match &packet.item {
            Some(Item::Data(data)) => data.data.len(),
            Some(Item::Header(header)) => 64 + header.path.len() + header.link_target.len(),
            _ => 8,
        };
        self.packets.push(packet);
        if self.bytes >= BATCH_BYTES || self.packets.len() >= BATCH_PACKETS {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<(), TreeError> {
        if self.packets.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        (self.flush)(std::mem::take(&mut self.packets))
    }
}

/// Reads a local tree or file and emits packets.
pub(crate) struct TreeReader<'a, F: FnMut(Vec<Packet>) -> Result<(), TreeError>> {
    out: &'a mut Batcher<F>,
    stats: TransferStats,
    /// When listing: the headers sent, and no content.
    listing: Option<Vec<Header>>,
}

impl<'a, F: FnMut(Vec<Packet>) -> Result<(), TreeError>> TreeReader<'a, F> {
    pub(crate) fn new(out: &'a mut Batcher<F>) -> Self {
        TreeReader {
            out,
            stats: TransferStats::default(),
            listing: None,
        }
    }

    /// Sends the headers of the directory `root` (a symlink at `root` itself is followed),
    /// filtered, without any content and without End; returns them in the order sent.
    pub(crate) fn list_dir(
        mut self,
        root: &Path,
        filter: &PathFilter,
    ) -> Result<Vec<Header>, TreeError> {
        self.listing = Some(Vec::new());
        let meta = fs::metadata(root).map_err(|e| TreeError::read(root, e))?;
        if !meta.is_dir() {
            return Err(TreeError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        self.push_header(header_for(b"", root, &meta)?)?;
        let mut pending = Vec::new();
        self.walk(root, b"", false, filter, &mut pending)?;
        Ok(self.listing.take().unwrap_or_default())
    }

    /// Sends the files of `listing` (headers of [`TreeReader::list_dir`] of `root`) at the
    /// indices `wanted` (ascending): the root and the directories leading to each one first,
    /// each file stat'ed again, then End.
    pub(crate) fn send_listed(
        mut self,
        root: &Path,
        listing: &[Header],
        wanted: &[u32],
    ) -> Result<TransferStats, TreeError> {
        let Some(root_header) = listing.first() else {
            return Err(TreeError::Protocol("empty listing".into()));
        };
        let dirs: std::collections::HashMap<&[u8], &Header> = listing
            .iter()
            .filter(|h| h.kind == Kind::Dir as i32)
            .map(|h| (h.path.as_slice(), h))
            .collect();
        self.out.push(packet(Item::Header(root_header.clone())))?;
        let mut sent: HashSet<&[u8]> = HashSet::from([&b""[..]]);
        let mut previous = None;
        for &id in wanted {
            let header = usize::try_from(id)
                .ok()
                .and_then(|i| listing.get(i))
                .filter(|h| h.kind == Kind::File as i32)
                .ok_or_else(|| TreeError::Protocol(format!("entry {id} is not a listed file")))?;
            if previous.is_some_and(|p| p >= id) {
                return Err(TreeError::Protocol(format!(
                    "wanted entries out of order at {id}"
                )));
            }
            previous = Some(id);
            let rel = header.path.as_slice();
            for (i, _) in rel.iter().enumerate().filter(|(_, b)| **b == b'/') {
                let dir = &rel[..i];
                if sent.insert(dir) {
                    let dir_header = dirs.get(dir).ok_or_else(|| {
                        TreeError::Protocol(format!("the directory of entry {id} is not listed"))
                    })?;
                    self.out.push(packet(Item::Header((*dir_header).clone())))?;
                }
            }
            let abs = root.join(OsStr::from_bytes(rel));
            let meta = fs::symlink_metadata(&abs).map_err(|e| TreeError::read(&abs, e))?;
            if !meta.is_file() {
                return Err(TreeError::Changed {
                    path: abs,
                    detail: "no longer a regular file".into(),
                });
            }
            let fresh = header_for(rel, &abs, &meta)?;
            let size = fresh.size;
            self.stats.files += 1;
            self.out.push(packet(Item::Header(fresh)))?;
            self.send_content(&abs, size, true)?;
        }
        self.finish()
    }

    fn push_header(&mut self, header: Header) -> Result<(), TreeError> {
        if let Some(listing) = &mut self.listing {
            listing.push(header.clone());
        }
        self.out.push(packet(Item::Header(header)))
    }

    /// Sends the directory `root` (a symlink at `root` itself is followed), filtered.
    pub(crate) fn send_dir(
        mut self,
        root: &Path,
        filter: &PathFilter,
    ) -> Result<TransferStats, TreeError> {
        let meta = fs::metadata(root).map_err(|e| TreeError::read(root, e))?;
        if !meta.is_dir() {
            return Err(TreeError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        self.out
            .push(packet(Item::Header(header_for(b"", root, &meta)?)))?;
        let mut pending = Vec::new();
        self.walk(root, b"", false, filter, &mut pending)?;
        self.finish()
    }

    /// Sends the single file `path` (symlinks followed) under the relative name "".
    pub(crate) fn send_file(mut self, path: &Path) -> Result<TransferStats, TreeError> {
        let meta = fs::metadata(path).map_err(|e| TreeError::read(path, e))?;
        if !meta.is_file() {
            return Err(TreeError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let header = header_for(b"", path, &meta)?;
        let size = header.size;
        self.out.push(packet(Item::Header(header)))?;
        self.stats.files += 1;
        self.send_content(path, size, false)?;
        self.finish()
    }

    fn finish(self) -> Result<TransferStats, TreeError> {
        self.out.push(packet(Item::End(End {})))?;
        self.out.flush()?;
        Ok(self.stats)
    }

    fn walk(
        &mut self,
        dir: &Path,
        rel: &[u8],
        included: bool,
        filter: &PathFilter,
        pending: &mut Vec<Header>,
    ) -> Result<(), TreeError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| TreeError::read(dir, e))? {
            let entry = entry.map_err(|e| TreeError::read(dir, e))?;
            names.push(entry.file_name());
        }
        names.sort();
        for name in names {
            let mut child_rel = Vec::with_capacity(rel.len() + 1 + name.len());
            if !rel.is_empty() {
                child_rel.extend_from_slice(rel);
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(name.as_bytes());
            let child = dir.join(&name);
            let meta = match fs::symlink_metadata(&child) {
                Ok(meta) => meta,
                // Removed since it was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(TreeError::read(&child, e)),
            };
            let decision = filter.decide(
                Path::new(OsStr::from_bytes(&child_rel)),
                meta.is_dir(),
                included,
            );
            if decision == Decision::Skip {
                continue;
            }
            let header = header_for(&child_rel, &child, &meta)?;
            let child_included = decision == Decision::Take;
            match Kind::try_from(header.kind) {
                Ok(Kind::Dir) => {
                    if child_included {
                        self.emit_pending(pending)?;
                        self.stats.dirs += 1;
                        self.push_header(header)?;
                        self.walk(&child, &child_rel, true, filter, pending)?;
                    } else {
                        // Sent only if something below it is included.
                        let depth = pending.len();
                        pending.push(header);
                        self.walk(&child, &child_rel, false, filter, pending)?;
                        pending.truncate(depth);
                    }
                }
                Ok(Kind::File) if child_included => {
                    self.emit_pending(pending)?;
                    self.stats.files += 1;
                    let size = header.size;
                    self.push_header(header)?;
                    if self.listing.is_none() {
                        self.send_content(&child, size, true)?;
                    }
                }
                Ok(Kind::Symlink) if child_included => {
                    self.emit_pending(pending)?;
                    self.stats.symlinks += 1;
                    self.push_header(header)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn emit_pending(&mut self, pending: &mut Vec<Header>) -> Result<(), TreeError> {
        for header in std::mem::take(pending) {
            self.stats.dirs += 1;
            self.push_header(header)?;
        }
        Ok(())
    }

    /// Streams `size` bytes of `path` in chunks, skipping holes.
    fn send_content(&mut self, path: &Path, size: u64, no_follow: bool) -> Result<(), TreeError> {
        if size == 0 {
            return Ok(());
        }
        let mut options = OpenOptions::new();
        options.read(true);
        if no_follow {
            options.custom_flags(libc_o_nofollow());
        }
        let mut file = options.open(path).map_err(|e| TreeError::read(path, e))?;
        let mut pos = 0u64;
        while pos < size {
            let (start, end) = next_data_region(&file, pos, size);
            if start >= size {
                break;
            }
            file.seek(SeekFrom::Start(start))
                .map_err(|e| TreeError::read(path, e))?;
            let mut offset = start;
            while offset < end {
                let want =
                    usize::try_from((end - offset).min(CHUNK_SIZE as u64)).unwrap_or(CHUNK_SIZE);
                let mut chunk = vec![0u8; want];
                let mut filled = 0;
                while filled < want {
                    let n = file
                        .read(&mut chunk[filled..])
                        .map_err(|e| TreeError::read(path, e))?;
                    if n == 0 {
                        return Err(TreeError::Changed {
                            path: path.to_path_buf(),
                            detail: format!(
                                "expected {size} bytes, ended at {}",
                                offset + filled as u64
                            ),
                        });
                    }
                    filled += n;
                }
                self.stats.bytes += want as u64;
                self.out.push(packet(Item::Data(Data {
                    offset,
                    data: chunk,
                })))?;
                offset += want as u64;
            }
            pos = end;
        }
        Ok(())
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// The next region `[start, end)` of `file` at or after `pos` that holds data, within `size`.
/// Without SEEK_DATA support the whole rest is one region.
fn next_data_region(file: &File, pos: u64, size: u64) -> (u64, u64) {
    let start = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
        Ok(start) => start,
        // ENXIO: no data after pos, the rest is a hole.
        Err(rustix::io::Errno::NXIO) => return (size, size),
        Err(_) => return (pos, size),
    };
    if start >= size {
        return (size, size);
    }
    let end = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(start))
        .unwrap_or(size)
        .min(size);
    if end <= start {
        (start, size)
    } else {
        (start, end)
    }
}

/// Where a [`TreeWriter`] writes.
pub(crate) enum WriteTarget {
    /// Into this directory (created, merged into unless `wipe`).
    Dir { root: PathBuf, wipe: bool },
    /// Exactly this file (parents created), replaced atomically; `mode` overrides the stream's.
    File { path: PathBuf, mode: Option<u32> },
}

struct OpenFile {
    path: PathBuf,
    file: File,
    /// For single-file targets: the temporary file renamed over the target at the end.
    temp: Option<tempfile::TempPath>,
    size: u64,
    next_offset: u64,
    mode: u32,
    mtime_ns: i64,
}

/// Applies packets to a local directory or file. Paths are checked: relative, no `.`/`..`,
/// every parent a directory this stream created or verified (so never through a symlink).
pub(crate) struct TreeWriter {
    target: WriteTarget,
    /// Relative paths of directories known to be real directories (created or verified).
    dirs: HashSet<Vec<u8>>,
    /// Directories whose mode and mtime are set at the end, after their content.
    pending_dirs: Vec<(Vec<u8>, u32, i64)>,
    current: Option<OpenFile>,
    ended: bool,
    seen_file: bool,
    stats: TransferStats,
    /// When set, the only entries the stream may hold.
    expected: Option<Expected>,
}

/// What the content phase of a sync may write: directories of its listing and the files asked
/// for, each exactly once.
#[derive(Debug, Default)]
pub(crate) struct Expected {
    pub(crate) dirs: HashSet<Vec<u8>>,
    pub(crate) files: HashSet<Vec<u8>>,
}

impl Expected {
    fn admit(&mut self, path: &[u8], kind: Kind) -> Result<(), TreeError> {
        let admitted = match kind {
            Kind::Dir => self.dirs.contains(path),
            Kind::File => self.files.remove(path),
            _ => false,
        };
        if admitted {
            Ok(())
        } else {
            Err(TreeError::Protocol(format!(
                "{:?} was not asked for",
                String::from_utf8_lossy(path)
            )))
        }
    }
}

impl TreeWriter {
    /// Prepares the target (creates the directory, wipes it if asked, creates a file's parents).
    pub(crate) fn new(target: WriteTarget) -> Result<Self, TreeError> {
        match &target {
            WriteTarget::Dir { root, wipe } => {
                if *wipe {
                    wipe_dir(root)?;
                }
                fs::create_dir_all(root).map_err(|e| TreeError::write(root, e))?;
                if !fs::metadata(root)
                    .map_err(|e| TreeError::write(root, e))?
                    .is_dir()
                {
                    return Err(TreeError::NotADirectory { path: root.clone() });
                }
            }
            WriteTarget::File { path, .. } => {
                let parent = file_parent(path);
                fs::create_dir_all(&parent).map_err(|e| TreeError::write(&parent, e))?;
            }
        }
        let mut dirs = HashSet::new();
        dirs.insert(Vec::new());
        Ok(TreeWriter {
            target,
            dirs,
            pending_dirs: Vec::new(),
            current: None,
            ended: false,
            seen_file: false,
            stats: TransferStats::default(),
            expected: None,
        })
    }

    /// Refuses any entry but those of `expected`, and a stream that misses one of its files.
    pub(crate) fn expecting(mut self, expected: Expected) -> Self {
        self.expected = Some(expected);
        self
    }

    pub(crate) fn apply(&mut self, packet: Packet) -> Result<(), TreeError> {
        if self.ended {
            return Err(TreeError::Protocol("packet after End".into()));
        }
        match packet.item {
            Some(Item::Header(header)) => {
                self.finish_file()?;
                match &self.target {
                    WriteTarget::Dir { .. } => self.dir_entry(header),
                    WriteTarget::File { .. } => self.file_entry(header),
                }
            }
            Some(Item::Data(data)) => self.data(data),
            Some(Item::Listed(_)) => Err(TreeError::Protocol("listing end in a transfer".into())),
            Some(Item::End(_)) => {
                self.finish_file()?;
                self.ended = true;
                if let WriteTarget::File { path, .. } = &self.target
                    && !self.seen_file
                {
                    return Err(TreeError::Protocol(format!(
                        "stream for {} ended without a file",
                        path.display()
                    )));
                }
                self.apply_dir_metadata()
            }
            None => Err(TreeError::Protocol("empty packet".into())),
        }
    }

    /// Checks that the stream was complete and returns what was written.
    pub(crate) fn finish(self) -> Result<TransferStats, TreeError> {
        if !self.ended {
            return Err(TreeError::Protocol(
                "stream ended before its End packet (transfer incomplete)".into(),
            ));
        }
        if let Some(missing) = self.expected.as_ref().and_then(|e| e.files.iter().next()) {
            return Err(TreeError::Protocol(format!(
                "{:?} was asked for and not sent",
                String::from_utf8_lossy(missing)
            )));
        }
        Ok(self.stats)
    }

    fn root(&self) -> &Path {
        match &self.target {
            WriteTarget::Dir { root, .. } => root,
            WriteTarget::File { path, .. } => path,
        }
    }

    fn dir_entry(&mut self, header: Header) -> Result<(), TreeError> {
        let rel = header.path.clone();
        let shown = || String::from_utf8_lossy(&header.path).into_owned();
        let kind = Kind::try_from(header.kind).map_err(|_| {
            TreeError::Protocol(format!("unknown kind {} for {:?}", header.kind, shown()))
        })?;
        if let Some(expected) = &mut self.expected {
            expected.admit(&rel, kind)?;
        }
        if rel.is_empty() {
            if kind != Kind::Dir {
                return Err(TreeError::Protocol("root entry is not a directory".into()));
            }
            self.pending_dirs.push((rel, header.mode, header.mtime_ns));
            return Ok(());
        }
        check_relative(&rel)?;
        let parent = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => &rel[..i],
            None => &rel[..0],
        };
        if !self.dirs.contains(parent) {
            return Err(TreeError::UnsafePath {
                path: shown(),
                reason: "its parent is not a directory created by this transfer",
            });
        }
        let abs = self.root().join(OsStr::from_bytes(&rel));
        let existing = match fs::symlink_metadata(&abs) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(TreeError::write(&abs, e)),
        };
        match kind {
            Kind::Dir => {
                match existing {
                    Some(meta) if meta.is_dir() => {}
                    other => {
                        if other.is_some() {
                            self.remove_existing(&rel, &abs, false)?;
                        }
                        fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&abs)
                            .map_err(|e| TreeError::write(&abs, e))?;
                    }
                }
                self.dirs.insert(rel.clone());
                self.pending_dirs.push((rel, header.mode, header.mtime_ns));
                self.stats.dirs += 1;
            }
            Kind::File => {
                if let Some(meta) = existing {
                    self.remove_existing(&rel, &abs, meta.is_dir())?;
                }
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc_o_nofollow())
                    .open(&abs)
                    .map_err(|e| TreeError::write(&abs, e))?;
                self.stats.files += 1;
                self.current = Some(OpenFile {
                    path: abs,
                    file,
                    temp: None,
                    size: header.size,
                    next_offset: 0,
                    mode: header.mode,
                    mtime_ns: header.mtime_ns,
                });
            }
            Kind::Symlink => {
                if let Some(meta) = existing {
                    self.remove_existing(&rel, &abs, meta.is_dir())?;
                }
                std::os::unix::fs::symlink(OsStr::from_bytes(&header.link_target), &abs)
                    .map_err(|e| TreeError::write(&abs, e))?;
                let mtime = file_time(header.mtime_ns);
                filetime::set_symlink_file_times(&abs, mtime, mtime)
                    .map_err(|e| TreeError::write(&abs, e))?;
                self.stats.symlinks += 1;
            }
            Kind::Unspecified | Kind::Other => {
                return Err(TreeError::Protocol(format!(
                    "unsupported entry kind for {:?}",
                    shown()
                )));
            }
        }
        Ok(())
    }

    /// Removes an existing entry that a new one of another kind replaces; a replaced directory
    /// (and everything under it) stops being a trusted parent.
    fn remove_existing(&mut self, rel: &[u8], abs: &Path, is_dir: bool) -> Result<(), TreeError> {
        if is_dir {
            fs::remove_dir_all(abs).map_err(|e| TreeError::write(abs, e))?;
            if self.dirs.remove(rel) {
                let mut prefix = rel.to_vec();
                prefix.push(b'/');
                self.dirs.retain(|d| !d.starts_with(&prefix));
                self.pending_dirs
                    .retain(|(d, _, _)| d.as_slice() != rel && !d.starts_with(&prefix));
            }
        } else {
            fs::remove_file(abs).map_err(|e| TreeError::write(abs, e))?;
        }
        Ok(())
    }

    fn file_entry(&mut self, header: Header) -> Result<(), TreeError> {
        let WriteTarget::File { path, .. } = &self.target else {
            return Err(TreeError::Protocol("not a file target".into()));
        };
        if self.seen_file {
            return Err(TreeError::Protocol(format!(
                "more than one entry in the stream for file {}",
                path.display()
            )));
        }
        if !header.path.is_empty() || Kind::try_from(header.kind) != Ok(Kind::File) {
            return Err(TreeError::Protocol(format!(
                "stream for file {} must hold one file entry named \"\"",
                path.display()
            )));
        }
        let parent = file_parent(path);
        let temp = tempfile::Builder::new()
            .prefix(".dagr-partial-")
            .tempfile_in(&parent)
            .map_err(|e| TreeError::write(&parent, e))?;
        let (file, temp_path) = temp.into_parts();
        self.seen_file = true;
        self.stats.files += 1;
        self.current = Some(OpenFile {
            path: path.clone(),
            file,
            temp: Some(temp_path),
            size: header.size,
            next_offset: 0,
            mode: header.mode,
            mtime_ns: header.mtime_ns,
        });
        Ok(())
    }

    fn data(&mut self, data: Data) -> Result<(), TreeError> {
        let Some(current) = self.current.as_mut() else {
            return Err(TreeError::Protocol("data without a file header".into()));
        };
        let len = data.data.len() as u64;
        if data.offset < current.next_offset || data.offset.saturating_add(len) > current.size {
            return Err(TreeError::Protocol(format!(
                "data at {}+{len} out of order or beyond the {} bytes announced for {}",
                data.offset,
                current.size,
                current.path.display()
            )));
        }
        current
            .file
            .write_all_at(&data.data, data.offset)
            .map_err(|e| TreeError::write(&current.path, e))?;
        current.next_offset = data.offset + len;
        self.stats.bytes += len;
        Ok(())
    }

    fn finish_file(&mut self) -> Result<(), TreeError> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        let path = &current.path;
        let file = &current.file;
        file.set_len(current.size)
            .map_err(|e| TreeError::write(path, e))?;
        let mode = match &self.target {
            WriteTarget::File {
                mode: Some(mode), ..
            } => *mode,
            _ => current.mode,
        };
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| TreeError::write(path, e))?;
        let mtime = file_time(current.mtime_ns);
        filetime::set_file_handle_times(file, Some(mtime), Some(mtime))
            .map_err(|e| TreeError::write(path, e))?;
        if let Some(temp) = current.temp {
            temp.persist(path)
                .map_err(|e| TreeError::write(path, e.error))?;
        }
        Ok(())
    }

    /// Sets directories' modes and mtimes, deepest last-created first, without following symlinks.
    fn apply_dir_metadata(&mut self) -> Result<(), TreeError> {
        let pending = std::mem::take(&mut self.pending_dirs);
        for (rel, mode, mtime_ns) in pending.into_iter().rev() {
            let abs = if rel.is_empty() {
                self.root().to_path_buf()
            } else {
                self.root().join(OsStr::from_bytes(&rel))
            };
            let mut options = OpenOptions::new();
            options.read(true);
            if !rel.is_empty() {
                options
                    .custom_flags(libc_o_nofollow() | rustix::fs::OFlags::DIRECTORY.bits() as i32);
            }
            let dir = options.open(&abs).map_err(|e| TreeError::write(&abs, e))?;
            dir.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
                .map_err(|e| TreeError::write(&abs, e))?;
            let mtime = file_time(mtime_ns);
            filetime::set_file_handle_times(&dir, Some(mtime), Some(mtime))
                .map_err(|e| TreeError::write(&abs, e))?;
        }
        Ok(())
    }
}

/// Empties the directory `root` (a symlink at `root` is followed, like when merging) or removes a
/// non-directory there. The directory itself stays: it may be a process's working directory.
fn wipe_dir(root: &Path) -> Result<(), TreeError> {
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {
            for entry in fs::read_dir(root).map_err(|e| TreeError::write(root, e))? {
                let entry = entry.map_err(|e| TreeError::write(root, e))?;
                let path = entry.path();
                let is_dir = entry
                    .file_type()
                    .map_err(|e| TreeError::write(&path, e))?
                    .is_dir();
                if is_dir {
                    fs::remove_dir_all(&path).map_err(|e| TreeError::write(&path, e))?;
                } else {
                    fs::remove_file(&path).map_err(|e| TreeError::write(&path, e))?;
                }
            }
            Ok(())
        }
        Ok(_) => fs::remove_file(root).map_err(|e| TreeError::write(root, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::symlink_metadata(root) {
            // A dangling symlink: replace it by the directory.
            Ok(_) => fs::remove_file(root).map_err(|e| TreeError::write(root, e)),
            Err(_) => Ok(()),
        },
        Err(e) => Err(TreeError::write(root, e)),
    }
}

fn file_parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_time(mtime_ns: i64) -> FileTime {
    let secs = mtime_ns.div_euclid(1_000_000_000);
    let nanos = u32::try_from(mtime_ns.rem_euclid(1_000_000_000)).unwrap_or(0);
    FileTime::from_unix_time(secs, nanos)
}

/// A stream path must be relative, '/'-separated, with only normal components.
pub(crate) fn check_relative(rel: &[u8]) -> Result<(), TreeError> {
    let refuse = |reason| TreeError::UnsafePath {
        path: String::from_utf8_lossy(rel).into_owned(),
        reason,
    };
    if rel.first() == Some(&b'/') {
        return Err(refuse("absolute path"));
    }
    if rel.contains(&0) {
        return Err(refuse("NUL byte in path"));
    }
    for component in rel.split(|b| *b == b'/') {
        match component {
            b"" => return Err(refuse("empty path component")),
            b"." => return Err(refuse("'.' component")),
            b".." => return Err(refuse("'..' component")),
            _ => {}
        }
    }
    Ok(())
}

/// Runs `job` on a blocking thread with a batcher that feeds the returned channel; a failure of the
/// job arrives as the last item. Dropping the receiver cancels the job at its next batch.
pub(crate) fn spawn_reader<J>(job: J) -> mpsc::Receiver<Result<Vec<Packet>, TreeError>>
where
    J: FnOnce(
            &mut Batcher<Box<dyn FnMut(Vec<Packet>) -> Result<(), TreeError> + Send>>,
        ) -> Result<TransferStats, TreeError>
        + Send
        + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let batch_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let flush: Box<dyn FnMut(Vec<Packet>) -> Result<(), TreeError> + Send> =
            Box::new(move |packets| {
                batch_tx
                    .blocking_send(Ok(packets))
                    .map_err(|_| TreeError::Cancelled)
            });
        let mut batcher = Batcher::new(flush);
        if let Err(err) = job(&mut batcher)
            && !matches!(err, TreeError::Cancelled)
        {
            let _ = tx.blocking_send(Err(err));
        }
    });
    rx
}

/// Feeds batches from `stream` to `writer` on a blocking thread; returns once the stream ended and
/// everything was written (or at the first failure of either side).
pub(crate) async fn write_stream<S>(
    mut stream: S,
    writer: TreeWriter,
) -> Result<TransferStats, TreeError>
where
    S: Stream<Item = Result<Vec<Packet>, TreeError>> + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Vec<Packet>>(CHANNEL_BATCHES);
    let worker = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        while let Some(batch) = rx.blocking_recv() {
            for packet in batch {
                writer.apply(packet)?;
            }
        }
        writer.finish()
    });
    let mut stream_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(batch) => {
                if tx.send(batch).await.is_err() {
                    // The writer failed: its error is the one to report.
                    break;
                }
            }
            Err(err) => {
                stream_error = Some(err);
                break;
            }
        }
    }
    drop(tx);
    let written = worker.await.map_err(|e| TreeError::Worker(e.to_string()))?;
    match (stream_error, written) {
        (_, Err(err)) if !matches!(err, TreeError::Protocol(_)) => Err(err),
        (Some(err), _) => Err(err),
        (None, written) => written,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn header(path: &str, kind: Kind, size: u64) -> Packet {
        packet(Item::Header(Header {
            path: path.as_bytes().to_vec(),
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            size,
            mtime_ns: 1_000_000_000,
            kind: kind as i32,
            ..Header::default()
        }))
    }

    fn link(path: &str, target: &str) -> Packet {
        packet(Item::Header(Header {
            path: path.as_bytes().to_vec(),
            kind: Kind::Symlink as i32,
            link_target: target.as_bytes().to_vec(),
            ..Header::default()
        }))
    }

    fn data(offset: u64, bytes: &[u8]) -> Packet {
        packet(Item::Data(Data {
            offset,
            data: bytes.to_vec(),
        }))
    }

    fn end() -> Packet {
        packet(Item::End(End {}))
    }

    /// Applies packets into a fresh dir; returns the first error.
    fn apply_all(root: &Path, packets: Vec<Packet>) -> Result<TransferStats, TreeError> {
        let mut writer = TreeWriter::new(WriteTarget::Dir {
            root: root.to_path_buf(),
            wipe: false,
        })?;
        for p in packets {
            writer.apply(p)?;
        }
        writer.finish()
    }

    fn unsafe_path(result: Result<TransferStats, TreeError>) -> String {
        match result {
            Err(TreeError::UnsafePath { path, .. }) => path,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn refuses_dot_dot_absolute_and_odd_components() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        for bad in [
            "../escape",
            "a/../../escape",
            "/etc/passwd",
            "./x",
            "a//b",
            "a/",
        ] {
            let got = unsafe_path(apply_all(&root, vec![header(bad, Kind::File, 0), end()]));
            assert_eq!(got, bad);
        }
        assert!(!base.path().join("escape").exists());
        let listing: Vec<_> = fs::read_dir(base.path()).unwrap().collect();
        assert_eq!(listing.len(), 1, "only the root was created");
    }

    #[test]
    fn refuses_writes_through_a_symlink_created_by_the_stream() {
        let base = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let target = outside.path().to_str().unwrap();
        // Through a symlink to a directory.
        let got = unsafe_path(apply_all(
            &root,
            vec![
                link("l", target),
                header("l/owned", Kind::File, 1),
                data(0, b"x"),
                end(),
            ],
        ));
        assert_eq!(got, "l/owned");
        // A directory replaced by a symlink stops being a parent.
        let got = unsafe_path(apply_all(
            &root,
            vec![
                header("d", Kind::Dir, 0),
                link("d", target),
                header("d/owned", Kind::File, 0),
                end(),
            ],
        ));
        assert_eq!(got, "d/owned");
        // A file named like a symlink replaces the symlink instead of writing through it.
        let victim = outside.path().join("victim");
        fs::write(&victim, b"original").unwrap();
        apply_all(
            &root,
            vec![
                link("f", victim.to_str().unwrap()),
                header("f", Kind::File, 3),
                data(0, b"new"),
                end(),
            ],
        )
        .unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"original");
        assert_eq!(fs::read(root.join("f")).unwrap(), b"new");
        // A parent that never appeared in the stream.
        let got = unsafe_path(apply_all(
            &root,
            vec![header("nope/x", Kind::File, 0), end()],
        ));
        assert_eq!(got, "nope/x");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[test]
    fn directory_metadata_is_not_applied_through_a_replacing_symlink() {
        let base = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let root = base.path().join("root");
        apply_all(
            &root,
            vec![
                header("d", Kind::Dir, 0),
                link("d", outside.path().to_str().unwrap()),
                end(),
            ],
        )
        .unwrap();
        assert_eq!(fs::metadata(outside.path()).unwrap().mode() & 0o7777, 0o700);
    }

    #[test]
    fn refuses_malformed_streams() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let protocol = |packets| match apply_all(&root, packets) {
            Err(TreeError::Protocol(message)) => message,
            other => panic!("expected a protocol error, got {other:?}"),
        };
        assert!(protocol(vec![data(0, b"x"), end()]).contains("without a file header"));
        assert!(
            protocol(vec![header("f", Kind::File, 2), data(0, b"xyz"), end()]).contains("beyond")
        );
        assert!(
            protocol(vec![
                header("f", Kind::File, 4),
                data(2, b"xy"),
                data(0, b"ab"),
                end()
            ])
            .contains("out of order")
        );
        assert!(protocol(vec![header("f", Kind::File, 0)]).contains("before its End"));
        assert!(protocol(vec![end(), header("g", Kind::File, 0)]).contains("after End"));
        assert!(protocol(vec![header("", Kind::File, 0), end()]).contains("root"));
    }

    #[test]
    fn single_file_target_takes_exactly_one_file() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("sub/out.txt");
        let mut writer = TreeWriter::new(WriteTarget::File {
            path: path.clone(),
            mode: Some(0o640),
        })
        .unwrap();
        writer.apply(header("", Kind::File, 5)).unwrap();
        writer.apply(data(0, b"hello")).unwrap();
        assert!(!path.exists(), "visible only once complete");
        assert!(writer.apply(header("", Kind::File, 0)).is_err());
        let base2 = tempfile::tempdir().unwrap();
        let mut writer = TreeWriter::new(WriteTarget::File {
            path: base2.path().join("x"),
            mode: None,
        })
        .unwrap();
        assert!(writer.apply(header("name", Kind::File, 0)).is_err());
        let mut writer = TreeWriter::new(WriteTarget::File {
            path: path.clone(),
            mode: Some(0o640),
        })
        .unwrap();
        writer.apply(header("", Kind::File, 5)).unwrap();
        writer.apply(data(0, b"hello")).unwrap();
        writer.apply(end()).unwrap();
        writer.finish().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        let leftovers = fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }

    #[test]
    fn reader_output_round_trips_through_the_writer() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("a/b")).unwrap();
        fs::write(src.path().join("a/b/f"), vec![5u8; 3 * CHUNK_SIZE + 17]).unwrap();
        std::os::unix::fs::symlink("b/f", src.path().join("a/l")).unwrap();
        let mut batches = Vec::new();
        let mut batcher = Batcher::new(|packets| {
            batches.push(packets);
            Ok(())
        });
        let sent = TreeReader::new(&mut batcher)
            .send_dir(src.path(), &PathFilter::default())
            .unwrap();
        drop(batcher);
        assert!(
            batches.len() >= 3,
            "large content is split into several batches"
        );
        let dest = tempfile::tempdir().unwrap();
        let received = apply_all(dest.path(), batches.into_iter().flatten().collect()).unwrap();
        assert_eq!(sent, received);
        assert_eq!(
            fs::read(dest.path().join("a/b/f")).unwrap(),
            fs::read(src.path().join("a/b/f")).unwrap()
        );
        assert_eq!(
            fs::read_link(dest.path().join("a/l")).unwrap(),
            PathBuf::from("b/f")
        );
    }
}
