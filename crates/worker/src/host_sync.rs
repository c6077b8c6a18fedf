//! Incremental host reads: what the worker keeps of each host directory it read
//! ([`HostBaselines`]), and how a new listing of it becomes a [`SyncPlan`] (what to fetch,
//! remove, create) applied on a child of the last result.
//!
//! A file is taken from the baseline, without its content travelling, only when its listed
//! `lstat` is identical to the one recorded (size, mtime and ctime in nanoseconds, inode,
//! device, mode) and both its times are older than the recorded walk's start by more than
//! [`RACY_WINDOW_NS`]. The second rule is git's answer to "racy" entries: a file rewritten
//! within the same timestamp tick as its last listing, with the same size, keeps all of its
//! times, so a file whose times are that recent is fetched again. ctime cannot be set by a user,
//! so `touch -d` after a rewrite does not hide it either. BuildKit's fsutil compares size, mtime
//! and mode only.
//!
//! The result's cache key is the digest of the tree ([`tree_digest`]): names, kinds, modes,
//! content digests and link targets in listing order, never times or owners. A baseline keeps
//! each file's content digest, so an unchanged tree's key is computed without reading it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use filetime::FileTime;
use sha2::{Digest as _, Sha256};

use crate::fsops::FsError;
use crate::{HostEntry, HostEntryKind};

/// A file whose mtime or ctime is within this much before its listing started is fetched again
/// at the next read (see the module docs). Two seconds cover coarse timestamp ticks and a host
/// clock slightly ahead of its filesystem's.
pub(crate) const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// A host read on a baseline whose snapshot chain is this deep starts over from nothing, so that
/// mounts stay short.
pub(crate) const MAX_CHAIN: usize = 16;

/// Prefix of the leases that keep baselines' snapshots from GC (in memory only: deleted when
/// the worker opens).
pub(crate) const LEASE_PREFIX: &str = "host-baseline-";

/// Which directory of which host, read with which patterns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BaselineKey {
    pub(crate) host: String,
    pub(crate) root: PathBuf,
    pub(crate) include: Vec<String>,
    pub(crate) exclude: Vec<String>,
}

/// One listed entry as the result holds it: the host's `lstat` and, for files, the content's
/// sha256.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) entry: HostEntry,
    pub(crate) content: Option<[u8; 32]>,
}

/// What the worker last produced for a [`BaselineKey`].
#[derive(Debug)]
pub(crate) struct Baseline {
    /// The committed snapshot of the result (held by the lease `lease`).
    pub(crate) snapshot: String,
    pub(crate) lease: String,
    pub(crate) walk_started_ns: i64,
    /// In listing order.
    pub(crate) records: Vec<Record>,
    index: HashMap<Vec<u8>, usize>,
    pub(crate) digest: String,
}

impl Baseline {
    pub(crate) fn new(
        snapshot: String,
        walk_started_ns: i64,
        records: Vec<Record>,
        digest: String,
    ) -> Self {
        let index = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.entry.path.clone(), i))
            .collect();
        Baseline {
            snapshot,
            lease: format!("{LEASE_PREFIX}{}", crate::random_id()),
            walk_started_ns,
            records,
            index,
            digest,
        }
    }

    fn get(&self, path: &[u8]) -> Option<&Record> {
        self.index.get(path).map(|&i| &self.records[i])
    }

    /// Bytes of memory it takes, roughly.
    fn weight(&self) -> u64 {
        self.records
            .iter()
            .map(|r| 2 * r.entry.path.len() + r.entry.link_target.len() + 160)
            .sum::<usize>() as u64
    }

    /// Whether the file `entry` may be taken from this baseline without fetching it.
    fn trusts(&self, entry: &HostEntry) -> Option<[u8; 32]> {
        let old = self.get(&entry.path)?;
        let o = &old.entry;
        let same = o.kind == HostEntryKind::File
            && entry.kind == HostEntryKind::File
            && o.size == entry.size
            && o.mtime_ns == entry.mtime_ns
            && o.ctime_ns == entry.ctime_ns
            && o.ino == entry.ino
            && o.dev == entry.dev
            && o.mode == entry.mode;
        let settled = entry.mtime_ns.max(entry.ctime_ns)
            < self.walk_started_ns.saturating_sub(RACY_WINDOW_NS);
        if same && settled { old.content } else { None }
    }
}

/// The baselines kept, least recently used dropped first beyond a byte budget. Each one's
/// snapshot is held by a lease of its own while it is kept.
pub(crate) struct HostBaselines {
    budget: u64,
    inner: parking_lot::Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    map: HashMap<BaselineKey, (Arc<Baseline>, u64)>,
    clock: u64,
    weight: u64,
}

impl HostBaselines {
    pub(crate) fn new(budget: u64) -> Self {
        HostBaselines {
            budget,
            inner: parking_lot::Mutex::new(Kept::default()),
        }
    }

    pub(crate) fn get(&self, key: &BaselineKey) -> Option<Arc<Baseline>> {
        let mut kept = self.inner.lock();
        kept.clock += 1;
        let now = kept.clock;
        let (baseline, used) = kept.map.get_mut(key)?;
        *used = now;
        Some(baseline.clone())
    }

    /// Keeps `baseline` for `key` (replacing the one there); returns the baselines dropped, whose
    /// leases the caller deletes.
    pub(crate) fn insert(&self, key: BaselineKey, baseline: Arc<Baseline>) -> Vec<Arc<Baseline>> {
        let mut kept = self.inner.lock();
        kept.clock += 1;
        let now = kept.clock;
        let weight = baseline.weight();
        let mut dropped = Vec::new();
        if let Some((old, _)) = kept.map.insert(key, (baseline, now)) {
            kept.weight = kept.weight.saturating_sub(old.weight());
            dropped.push(old);
        }
        kept.weight += weight;
        while kept.weight > self.budget {
            let Some(oldest) = kept
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((old, _)) = kept.map.remove(&oldest) {
                kept.weight = kept.weight.saturating_sub(old.weight());
                dropped.push(old);
            }
        }
        dropped
    }

    /// Puts `new` in place of `old` for `key` if `old` is still the one kept; returns `new` back
    /// when not (its lease is then the caller's to delete).
    pub(crate) fn replace(
        &self,
        key: &BaselineKey,
        old: &Arc<Baseline>,
        new: Arc<Baseline>,
    ) -> Result<(), Arc<Baseline>> {
        let mut kept = self.inner.lock();
        match kept.map.get_mut(key) {
            Some((current, _)) if Arc::ptr_eq(current, old) => {
                let (added, removed) = (new.weight(), current.weight());
                *current = new;
                kept.weight = (kept.weight + added).saturating_sub(removed);
                Ok(())
            }
            _ => Err(new),
        }
    }

    /// Forgets the baseline of `key` if it is `baseline`.
    pub(crate) fn remove(&self, key: &BaselineKey, baseline: &Arc<Baseline>) -> bool {
        let mut kept = self.inner.lock();
        let matches = kept
            .map
            .get(key)
            .is_some_and(|(b, _)| Arc::ptr_eq(b, baseline));
        if matches && let Some((old, _)) = kept.map.remove(key) {
            kept.weight = kept.weight.saturating_sub(old.weight());
        }
        matches
    }

    /// Drops every baseline; returns them, whose leases the caller deletes.
    pub(crate) fn clear(&self) -> Vec<Arc<Baseline>> {
        let mut kept = self.inner.lock();
        kept.weight = 0;
        kept.map.drain().map(|(_, (b, _))| b).collect()
    }

    /// The keys of baselines whose snapshot is `snapshot`.
    pub(crate) fn keys_on(&self, snapshot: &str) -> Vec<(BaselineKey, Arc<Baseline>)> {
        self.inner
            .lock()
            .map
            .iter()
            .filter(|(_, (b, _))| b.snapshot == snapshot)
            .map(|(k, (b, _))| (k.clone(), b.clone()))
            .collect()
    }
}

/// What a host read does with a listing, given the baseline (none: everything is new).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SyncPlan {
    /// Files to fetch (listing indices, ascending).
    pub(crate) wanted: Vec<usize>,
    /// Baseline paths to remove first (the topmost of each removed subtree).
    pub(crate) remove: Vec<Vec<u8>>,
    /// Directories and symlinks to create, in listing order (after the removals).
    pub(crate) create: Vec<usize>,
    /// Directories whose mode and mtime are set at the end (listing indices).
    pub(crate) dir_meta: Vec<usize>,
    /// Content digests of the files taken from the baseline (by listing index).
    pub(crate) known: HashMap<usize, [u8; 32]>,
}

impl SyncPlan {
    /// Whether the listing describes the baseline's tree exactly.
    pub(crate) fn unchanged(&self) -> bool {
        self.wanted.is_empty()
            && self.remove.is_empty()
            && self.create.is_empty()
            && self.dir_meta.is_empty()
    }
}

fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[..i],
        None => &path[..0],
    }
}

/// Compares a (checked) listing with the baseline.
pub(crate) fn plan(baseline: Option<&Baseline>, entries: &[HostEntry]) -> SyncPlan {
    let mut plan = SyncPlan::default();
    let listed: HashMap<&[u8], usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_slice(), i))
        .collect();
    let mut touched: BTreeSet<usize> = BTreeSet::new();
    let touch_parent = |path: &[u8], touched: &mut BTreeSet<usize>| {
        if !path.is_empty()
            && let Some(&p) = listed.get(parent_of(path))
        {
            touched.insert(p);
        }
    };
    let old_of = |path: &[u8]| baseline.and_then(|b| b.get(path)).map(|r| &r.entry);
    for (i, e) in entries.iter().enumerate() {
        let old = old_of(&e.path);
        match e.kind {
            HostEntryKind::Dir => match old {
                Some(o) if o.kind == HostEntryKind::Dir => {
                    if o.mode != e.mode || o.mtime_ns != e.mtime_ns {
                        touched.insert(i);
                    }
                }
                _ if e.path.is_empty() => {
                    touched.insert(i);
                }
                Some(_) => {
                    plan.remove.push(e.path.clone());
                    plan.create.push(i);
                    touched.insert(i);
                    touch_parent(&e.path, &mut touched);
                }
                None => {
                    plan.create.push(i);
                    touched.insert(i);
                    touch_parent(&e.path, &mut touched);
                }
            },
            HostEntryKind::File => {
                if let Some(content) = baseline.and_then(|b| b.trusts(e)) {
                    plan.known.insert(i, content);
                    continue;
                }
                plan.wanted.push(i);
                if old.is_some_and(|o| o.kind != HostEntryKind::File) {
                    plan.remove.push(e.path.clone());
                }
                // The fetch writes every directory leading to the file.
                let mut path = e.path.as_slice();
                while !path.is_empty() {
                    path = parent_of(path);
                    if let Some(&p) = listed.get(path) {
                        touched.insert(p);
                    }
                }
            }
            HostEntryKind::Symlink => {
                let same = old.is_some_and(|o| {
                    o.kind == HostEntryKind::Symlink
                        && o.link_target == e.link_target
                        && o.mtime_ns == e.mtime_ns
                });
                if !same {
                    if old.is_some() {
                        plan.remove.push(e.path.clone());
                    }
                    plan.create.push(i);
                    touch_parent(&e.path, &mut touched);
                }
            }
        }
    }
    if let Some(b) = baseline {
        for r in &b.records {
            let path = r.entry.path.as_slice();
            if path.is_empty() || listed.contains_key(path) {
                continue;
            }
            // Only the top of a removed subtree: its parent stays a directory.
            let parent = parent_of(path);
            let parent_stays = listed
                .get(parent)
                .is_some_and(|&p| entries[p].kind == HostEntryKind::Dir)
                && b.get(parent)
                    .is_some_and(|o| o.entry.kind == HostEntryKind::Dir);
            if parent_stays {
                plan.remove.push(path.to_vec());
                touch_parent(path, &mut touched);
            }
        }
    }
    // A directory whose content changed gets its mtime back at the end, and so does the root
    // whenever anything changed (the fetch sets it too).
    if !touched.is_empty() || !plan.wanted.is_empty() || !plan.remove.is_empty() {
        touched.insert(0);
    }
    plan.dir_meta = touched.into_iter().collect();
    plan
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |source| FsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn file_time(ns: i64) -> FileTime {
    FileTime::from_unix_time(
        ns.div_euclid(1_000_000_000),
        u32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0),
    )
}

fn at(dest: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        dest.to_path_buf()
    } else {
        dest.join(OsStr::from_bytes(rel))
    }
}

/// Removes what `path` names in `dest`, whatever it is (never following a symlink).
fn remove_any(path: &Path) -> Result<(), FsError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map_err(io_err(path)),
        Ok(_) => fs::remove_file(path).map_err(io_err(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Blocking: the removals and creations of `plan` in `dest`, a writable copy of the baseline's
/// tree (or an empty directory).
pub(crate) fn apply_structure(
    dest: &Path,
    entries: &[HostEntry],
    plan: &SyncPlan,
) -> Result<(), FsError> {
    for rel in &plan.remove {
        remove_any(&at(dest, rel))?;
    }
    for &i in &plan.create {
        let e = &entries[i];
        let path = at(dest, &e.path);
        match e.kind {
            HostEntryKind::Dir => match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    remove_any(&path)?;
                    fs::create_dir(&path).map_err(io_err(&path))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(io_err(&path))?;
                }
                Err(e) => return Err(io_err(&path)(e)),
            },
            HostEntryKind::Symlink => {
                remove_any(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&e.link_target), &path)
                    .map_err(io_err(&path))?;
                let t = file_time(e.mtime_ns);
                filetime::set_symlink_file_times(&path, t, t).map_err(io_err(&path))?;
            }
            HostEntryKind::File => {}
        }
    }
    Ok(())
}

/// Blocking: sets the mode and mtime of the directories of `plan.dir_meta` (never through a
/// symlink).
pub(crate) fn apply_dir_meta(
    dest: &Path,
    entries: &[HostEntry],
    plan: &SyncPlan,
) -> Result<(), FsError> {
    for &i in &plan.dir_meta {
        let e = &entries[i];
        let path = at(dest, &e.path);
        let mut options = fs::OpenOptions::new();
        options.read(true);
        if !e.path.is_empty() {
            options.custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::DIRECTORY).bits() as i32,
            );
        }
        let dir = options.open(&path).map_err(io_err(&path))?;
        dir.set_permissions(fs::Permissions::from_mode(e.mode & 0o7777))
            .map_err(io_err(&path))?;
        let t = file_time(e.mtime_ns);
        filetime::set_file_handle_times(&dir, Some(t), Some(t)).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Blocking: the records of the new tree: each listed entry with its content digest, known from
/// the baseline or read from the fetched file in `dest`. A fetched file that differs from its
/// listing (it changed between the two) is recorded as written, with times that match nothing,
/// so that the next read fetches it again.
pub(crate) fn records(
    dest: &Path,
    entries: Vec<HostEntry>,
    plan: &SyncPlan,
) -> Result<Vec<Record>, FsError> {
    let wanted: HashSet<usize> = plan.wanted.iter().copied().collect();
    let mut out = Vec::with_capacity(entries.len());
    for (i, mut entry) in entries.into_iter().enumerate() {
        let content = match entry.kind {
            HostEntryKind::File if wanted.contains(&i) => {
                let path = at(dest, &entry.path);
                let file = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&path)
                    .map_err(io_err(&path))?;
                let meta = file.metadata().map_err(io_err(&path))?;
                let (digest, size) = hash(file, &path)?;
                if size != entry.size || meta.mode() & 0o7777 != entry.mode {
                    entry.size = size;
                    entry.mode = meta.mode() & 0o7777;
                    entry.ctime_ns = i64::MIN;
                }
                Some(digest)
            }
            HostEntryKind::File => {
                Some(plan.known.get(&i).copied().ok_or_else(|| FsError::Io {
                    path: String::from_utf8_lossy(&entry.path).into_owned(),
                    source: io::Error::other("neither fetched nor known"),
                })?)
            }
            _ => None,
        };
        out.push(Record { entry, content });
    }
    Ok(out)
}

fn hash(mut file: fs::File, path: &Path) -> Result<([u8; 32], u64), FsError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((h.finalize().into(), size))
}

/// The digest of a tree given its records in listing order: for each entry but the root, its
/// path, kind, mode and content digest or link target (no times, no owners).
pub(crate) fn tree_digest(records: &[Record]) -> String {
    let mut h = Sha256::new();
    for r in records.iter().filter(|r| !r.entry.path.is_empty()) {
        let e = &r.entry;
        h.update(&e.path);
        h.update([0]);
        match e.kind {
            HostEntryKind::Dir => h.update(format!("d {:o}", e.mode)),
            HostEntryKind::File => {
                h.update(format!("f {:o} ", e.mode));
                h.update(hex::encode(r.content.unwrap_or_default()));
            }
            HostEntryKind::Symlink => {
                h.update(b"l ");
                h.update(&e.link_target);
            }
        }
        h.update([0xff]);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: HostEntryKind, size: u64, t: i64) -> HostEntry {
        HostEntry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: if kind == HostEntryKind::Dir {
                0o755
            } else {
                0o644
            },
            size,
            mtime_ns: t,
            ctime_ns: t,
            ino: path.len() as u64 + 1,
            dev: 7,
            link_target: if kind == HostEntryKind::Symlink {
                b"target".to_vec()
            } else {
                Vec::new()
            },
        }
    }

    const OLD: i64 = 1_000_000_000_000;
    const WALK: i64 = OLD + 60_000_000_000;

    fn tree() -> Vec<HostEntry> {
        vec![
            entry("", HostEntryKind::Dir, 0, OLD),
            entry("a", HostEntryKind::Dir, 0, OLD),
            entry("a/x", HostEntryKind::File, 3, OLD),
            entry("a/y", HostEntryKind::File, 4, OLD),
            entry("l", HostEntryKind::Symlink, 0, OLD),
            entry("z", HostEntryKind::File, 5, OLD),
        ]
    }

    fn baseline_of(entries: &[HostEntry], walk: i64) -> Baseline {
        let records: Vec<Record> = entries
            .iter()
            .map(|e| Record {
                entry: e.clone(),
                content: (e.kind == HostEntryKind::File).then_some([e.size as u8; 32]),
            })
            .collect();
        let digest = tree_digest(&records);
        Baseline::new("snap".into(), walk, records, digest)
    }

    #[test]
    fn an_unchanged_listing_needs_nothing() {
        let b = baseline_of(&tree(), WALK);
        let p = plan(Some(&b), &tree());
        assert!(p.unchanged(), "{p:?}");
        assert_eq!(p.known.len(), 3);
    }

    #[test]
    fn without_a_baseline_everything_is_fetched_or_created() {
        let p = plan(None, &tree());
        assert_eq!(p.wanted, vec![2, 3, 5]);
        assert_eq!(p.create, vec![1, 4]);
        assert_eq!(p.dir_meta, vec![0, 1]);
        assert!(p.remove.is_empty());
    }

    #[test]
    fn a_changed_stat_fetches_that_file_alone() {
        let b = baseline_of(&tree(), WALK);
        for change in [
            |e: &mut HostEntry| e.size += 1,
            |e: &mut HostEntry| e.mtime_ns += 1,
            |e: &mut HostEntry| e.ctime_ns += 1,
            |e: &mut HostEntry| e.ino += 1,
            |e: &mut HostEntry| e.mode = 0o600,
        ] {
            let mut now = tree();
            change(&mut now[3]);
            let p = plan(Some(&b), &now);
            assert_eq!(p.wanted, vec![3]);
            assert_eq!(p.dir_meta, vec![0, 1], "the fetch rewrites its directories");
            assert!(p.remove.is_empty() && p.create.is_empty());
        }
    }

    #[test]
    fn a_file_as_recent_as_its_listing_is_fetched_again_even_with_the_same_stat() {
        // Same size, same times, same inode: a rewrite within one timestamp tick looks like
        // this. The baseline's walk began less than the racy window after the file's times.
        let mut recent = tree();
        recent[2].mtime_ns = WALK - RACY_WINDOW_NS / 2;
        recent[2].ctime_ns = WALK - RACY_WINDOW_NS / 2;
        let b = baseline_of(&recent, WALK);
        let p = plan(Some(&b), &recent);
        assert_eq!(p.wanted, vec![2]);
        // Once settled (a later walk), the same stat is trusted.
        let b = baseline_of(&recent, WALK + 2 * RACY_WINDOW_NS);
        assert!(plan(Some(&b), &recent).unchanged());
    }

    #[test]
    fn deletions_renames_and_kind_changes_show_up() {
        let b = baseline_of(&tree(), WALK);
        // "a" renamed to "b", "z" now a directory, "l" retargeted.
        let mut now = vec![
            entry("", HostEntryKind::Dir, 0, OLD + 1),
            entry("b", HostEntryKind::Dir, 0, OLD),
            entry("b/x", HostEntryKind::File, 3, OLD),
            entry("b/y", HostEntryKind::File, 4, OLD),
            entry("l", HostEntryKind::Symlink, 0, OLD),
            entry("z", HostEntryKind::Dir, 0, OLD),
        ];
        now[4].link_target = b"elsewhere".to_vec();
        let p = plan(Some(&b), &now);
        assert_eq!(p.wanted, vec![2, 3]);
        assert_eq!(p.create, vec![1, 4, 5]);
        let removed: BTreeSet<&[u8]> = p.remove.iter().map(Vec::as_slice).collect();
        assert_eq!(removed, BTreeSet::from([&b"a"[..], b"l", b"z"]));
        assert!(p.dir_meta.contains(&0) && p.dir_meta.contains(&1) && p.dir_meta.contains(&5));
    }

    #[test]
    fn the_digest_ignores_times_and_sees_modes_contents_and_targets() {
        let base = baseline_of(&tree(), WALK);
        let mut later = tree();
        for e in &mut later {
            e.mtime_ns += 5;
            e.ctime_ns += 5;
        }
        assert_eq!(baseline_of(&later, WALK).digest, base.digest);
        let mut moded = tree();
        moded[2].mode = 0o755;
        assert_ne!(baseline_of(&moded, WALK).digest, base.digest);
        let mut retargeted = tree();
        retargeted[4].link_target = b"x".to_vec();
        assert_ne!(baseline_of(&retargeted, WALK).digest, base.digest);
        let mut records = base.records.clone();
        records[2].content = Some([9; 32]);
        assert_ne!(tree_digest(&records), base.digest);
    }

    #[test]
    fn baselines_beyond_the_budget_go_least_recently_used_first() {
        let one = Arc::new(baseline_of(&tree(), WALK));
        let budget = one.weight() * 2;
        let kept = HostBaselines::new(budget);
        let key = |n: &str| BaselineKey {
            host: "h".into(),
            root: PathBuf::from(n),
            include: Vec::new(),
            exclude: Vec::new(),
        };
        assert!(kept.insert(key("a"), one.clone()).is_empty());
        assert!(
            kept.insert(key("b"), Arc::new(baseline_of(&tree(), WALK)))
                .is_empty()
        );
        assert!(kept.get(&key("a")).is_some());
        let dropped = kept.insert(key("c"), Arc::new(baseline_of(&tree(), WALK)));
        assert_eq!(dropped.len(), 1);
        assert!(kept.get(&key("b")).is_none(), "b was used least recently");
        assert!(kept.get(&key("a")).is_some() && kept.get(&key("c")).is_some());
        // Another host never sees them.
        let mut other = key("a");
        other.host = "other".into();
        assert!(kept.get(&other).is_none());
    }
}
