//! Incremental reads of a host directory (`SyncDir`): the client lists the tree (headers only,
//! in a canonical order), the engine compares the listing with what it already holds and asks
//! for the files it needs; only those travel.
//!
//! Engine side: [`crate::AttachablesClient::list_dir`] returns a checked [`Listing`] and a
//! [`PendingFetch`], whose [`PendingFetch::fetch`] writes the asked files (and the directories
//! leading to them) into a local directory, refusing anything it did not ask for. Client side:
//! [`serve_sync`] runs the walk and then answers the engine's wants.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use dagr_pathfilter::PathFilter;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::proto::{
    Batch, Header, Kind, Listed, Packet, SyncRequest, Want, packet::Item, sync_request,
};
use crate::tree::{
    self, Batcher, EntryKind, Expected, TransferStats, TreeError, TreeReader, TreeWriter,
};
use crate::{AttachError, methods};

/// Wanted entries per `Want` message.
const WANTS_PER_MESSAGE: usize = 1 << 16;

/// One entry of a listing: what a host's `lstat` said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// Relative to the listed directory, '/'-separated; empty for the directory itself.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits (0o7777).
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    /// For symlinks: the target, as stored.
    pub link_target: Vec<u8>,
}

/// A checked listing of a host directory: the root first, then pre-order with names sorted
/// bytewise within each directory (see [`path_order`]), every entry's parent a listed directory.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The client's name for its host (stable across its sessions).
    pub host_id: String,
    /// The absolute path of the listed directory on the client's host.
    pub root: PathBuf,
    /// The client's clock when its walk started, in nanoseconds since the epoch.
    pub walk_started_ns: i64,
    pub entries: Vec<HostEntry>,
}

/// The order of a listing: component by component, bytewise (a directory's content comes right
/// after it, before its next sibling).
pub fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: &u8| if *c == b'/' { 0 } else { *c };
    a.iter().map(key).cmp(b.iter().map(key))
}

/// The rest of a `SyncDir` call once its listing arrived: ask for files, or drop it to end the call.
pub struct PendingFetch {
    method: &'static str,
    host_path: String,
    requests: mpsc::Sender<SyncRequest>,
    responses: tonic::Streaming<Batch>,
    /// Listed directories, and files by index, to check what the client sends.
    dirs: HashSet<Vec<u8>>,
    files: Vec<Option<Vec<u8>>>,
}

impl PendingFetch {
    /// Asks for the files at `wanted` (indices into the listing's entries, ascending) and writes
    /// them, with the directories leading to them, into `dest` (created; merged into: an
    /// existing file at a wanted path is replaced).
    pub async fn fetch(self, wanted: &[usize], dest: &Path) -> Result<TransferStats, AttachError> {
        let transfer = |source| AttachError::Transfer {
            method: self.method,
            path: self.host_path.clone(),
            source,
        };
        let mut expected = Expected {
            dirs: self.dirs,
            files: HashSet::with_capacity(wanted.len()),
        };
        let mut ids = Vec::with_capacity(wanted.len());
        for &i in wanted {
            let path = self.files.get(i).and_then(Option::as_ref).ok_or_else(|| {
                transfer(TreeError::Protocol(format!(
                    "entry {i} is not a listed file"
                )))
            })?;
            expected.files.insert(path.clone());
            ids.push(u32::try_from(i).map_err(|_| {
                transfer(TreeError::Protocol(format!(
                    "entry {i} is beyond the protocol's range"
                )))
            })?);
        }
        let mut chunks: Vec<&[u32]> = ids.chunks(WANTS_PER_MESSAGE).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (n, chunk) in chunks.into_iter().enumerate() {
            let want = SyncRequest {
                item: Some(sync_request::Item::Want(Want {
                    entries: chunk.to_vec(),
                    last: n == last,
                })),
            };
            if self.requests.send(want).await.is_err() {
                return Err(transfer(TreeError::Cancelled));
            }
        }
        let target = tree::WriteTarget::Dir {
            root: dest.to_path_buf(),
            wipe: false,
        };
        let writer = tokio::task::spawn_blocking(move || TreeWriter::new(target))
            .await
            .map_err(|e| transfer(TreeError::Worker(e.to_string())))?
            .map_err(transfer)?
            .expecting(expected);
        let batches = self
            .responses
            .map(|item| item.map(|batch| batch.packets).map_err(TreeError::Stream));
        let stats = tree::write_stream(batches, writer).await.map_err(transfer);
        drop(self.requests);
        stats
    }
}

/// Reads the listing phase of a `SyncDir` response stream, checking every entry.
pub(crate) async fn receive_listing(
    host_path: &str,
    requests: mpsc::Sender<SyncRequest>,
    mut responses: tonic::Streaming<Batch>,
) -> Result<(Listing, PendingFetch), AttachError> {
    const METHOD: &str = methods::SYNC_DIR;
    let transfer = |source| AttachError::Transfer {
        method: METHOD,
        path: host_path.to_string(),
        source,
    };
    let mut check = ListingCheck::default();
    let listed = loop {
        let batch = match responses.message().await {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                return Err(transfer(TreeError::Protocol(
                    "stream ended before the end of the listing".into(),
                )));
            }
            Err(status) => return Err(transfer(TreeError::Stream(status))),
        };
        let mut packets = batch.packets.into_iter();
        let mut listed = None;
        for packet in packets.by_ref() {
            match packet.item {
                Some(Item::Header(header)) => check.push(header).map_err(transfer)?,
                Some(Item::Listed(l)) => {
                    listed = Some(l);
                    break;
                }
                _ => {
                    return Err(transfer(TreeError::Protocol(
                        "only headers may come before the end of a listing".into(),
                    )));
                }
            }
        }
        if let Some(listed) = listed {
            if packets.next().is_some() {
                return Err(transfer(TreeError::Protocol(
                    "packets after the end of a listing in its batch".into(),
                )));
            }
            break listed;
        }
    };
    if check.entries.is_empty() {
        return Err(transfer(TreeError::Protocol("empty listing".into())));
    }
    let files = check
        .entries
        .iter()
        .map(|e| (e.kind == EntryKind::File).then(|| e.path.clone()))
        .collect();
    let listing = Listing {
        host_id: listed.host_id,
        root: PathBuf::from(OsStr::from_bytes(&listed.root)),
        walk_started_ns: listed.walk_started_ns,
        entries: check.entries,
    };
    let pending = PendingFetch {
        method: METHOD,
        host_path: host_path.to_string(),
        requests,
        responses,
        dirs: check.dirs,
        files,
    };
    Ok((listing, pending))
}

/// Checks a listing as it arrives: the root first, then safe relative paths in [`path_order`],
/// each one's parent a listed directory, only directories, files and symlinks.
#[derive(Default)]
pub(crate) struct ListingCheck {
    entries: Vec<HostEntry>,
    dirs: HashSet<Vec<u8>>,
}

impl ListingCheck {
    #[cfg(test)]
    pub(crate) fn into_entries(self) -> Vec<HostEntry> {
        self.entries
    }

    pub(crate) fn push(&mut self, header: Header) -> Result<(), TreeError> {
        let shown = || String::from_utf8_lossy(&header.path).into_owned();
        let kind = match Kind::try_from(header.kind) {
            Ok(Kind::Dir) => EntryKind::Dir,
            Ok(Kind::File) => EntryKind::File,
            Ok(Kind::Symlink) => EntryKind::Symlink,
            _ => {
                return Err(TreeError::Protocol(format!(
                    "unsupported entry kind for {:?}",
                    shown()
                )));
            }
        };
        match self.entries.last() {
            None => {
                if !header.path.is_empty() || kind != EntryKind::Dir {
                    return Err(TreeError::Protocol(
                        "a listing starts with its root directory".into(),
                    ));
                }
            }
            Some(previous) => {
                tree::check_relative(&header.path)?;
                if path_order(&previous.path, &header.path) != Ordering::Less {
                    return Err(TreeError::Protocol(format!(
                        "listing out of order at {:?}",
                        shown()
                    )));
                }
                let parent = match header.path.iter().rposition(|b| *b == b'/') {
                    Some(i) => &header.path[..i],
                    None => &header.path[..0],
                };
                if !self.dirs.contains(parent) {
                    return Err(TreeError::UnsafePath {
                        path: shown(),
                        reason: "its parent is not a listed directory",
                    });
                }
            }
        }
        if kind == EntryKind::Dir {
            self.dirs.insert(header.path.clone());
        }
        self.entries.push(HostEntry {
            path: header.path,
            kind,
            mode: header.mode & 0o7777,
            size: if kind == EntryKind::File {
                header.size
            } else {
                0
            },
            mtime_ns: header.mtime_ns,
            ctime_ns: header.ctime_ns,
            ino: header.ino,
            dev: header.dev,
            link_target: header.link_target,
        });
        Ok(())
    }
}

/// The name a listing gives its directory ([`Listing::root`]).
pub(crate) enum RootName {
    /// The directory's canonical path.
    Canonical,
    /// This path (a container's directory is reached through `/proc/<pid>/root`, which a
    /// canonical path would leave).
    Given(PathBuf),
}

/// Client side of a `SyncDir`, on a blocking thread: lists `dir` (filtered), ends the listing
/// with `Listed`, waits for the engine's wants, then sends those files.
pub(crate) fn serve_sync<F>(
    out: &mut Batcher<F>,
    dir: &Path,
    name: RootName,
    filter: &PathFilter,
    host_id: String,
    mut wants: mpsc::Receiver<Want>,
) -> Result<TransferStats, TreeError>
where
    F: FnMut(Vec<Packet>) -> Result<(), TreeError>,
{
    let walk_started_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let root = match name {
        RootName::Canonical => std::fs::canonicalize(dir).map_err(|e| TreeError::Read {
            path: dir.to_path_buf(),
            source: e,
        })?,
        RootName::Given(path) => path,
    };
    let listing = TreeReader::new(out).list_dir(dir, filter)?;
    out.push(tree::packet(Item::Listed(Listed {
        walk_started_ns,
        root: root.into_os_string().into_encoded_bytes(),
        host_id,
    })))?;
    out.flush()?;
    let mut wanted = Vec::new();
    loop {
        let want = wants.blocking_recv().ok_or(TreeError::Cancelled)?;
        wanted.extend(want.entries);
        if want.last {
            break;
        }
    }
    TreeReader::new(out).send_listed(dir, &listing, &wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_order_puts_a_directory_before_its_next_sibling() {
        let mut paths: Vec<&[u8]> = vec![b"a.txt", b"a/b", b"a", b"a0", b"a/b/c", b"", b"b"];
        paths.sort_by(|a, b| path_order(a, b));
        let expected: Vec<&[u8]> = vec![b"", b"a", b"a/b", b"a/b/c", b"a.txt", b"a0", b"b"];
        assert_eq!(paths, expected);
    }

    fn header(path: &str, kind: Kind) -> Header {
        Header {
            path: path.as_bytes().to_vec(),
            mode: 0o755,
            kind: kind as i32,
            ..Header::default()
        }
    }

    #[test]
    fn listing_check_refuses_disorder_orphans_and_escapes() {
        let check = |headers: Vec<Header>| {
            let mut c = ListingCheck::default();
            headers.into_iter().try_for_each(|h| c.push(h))
        };
        assert!(
            check(vec![
                header("", Kind::Dir),
                header("a", Kind::Dir),
                header("a/x", Kind::File),
                header("b", Kind::Symlink),
            ])
            .is_ok()
        );
        // Not rooted.
        assert!(check(vec![header("a", Kind::Dir)]).is_err());
        // After the root, each of these is refused.
        let refused: [&[(&str, Kind)]; 8] = [
            // Out of order, or twice.
            &[("b", Kind::File), ("a", Kind::File)],
            &[("a", Kind::File), ("a", Kind::File)],
            // Below a file or a symlink, or below nothing listed.
            &[("a", Kind::File), ("a/x", Kind::File)],
            &[("a", Kind::Symlink), ("a/x", Kind::File)],
            &[("a/x", Kind::File)],
            // Escapes.
            &[("..", Kind::Dir)],
            &[("/etc", Kind::Dir)],
            // Sockets and devices are never listed.
            &[("s", Kind::Other)],
        ];
        for case in refused {
            let mut headers = vec![header("", Kind::Dir)];
            headers.extend(case.iter().map(|(path, kind)| header(path, *kind)));
            assert!(check(headers).is_err(), "{case:?}");
        }
    }
}
