//! Reading the client's tree again: only what changed travels (counted by the engine's
//! `/metrics`), the result always matches the tree (checked by exporting it back to the host),
//! and an unchanged tree read by many sessions is stored once.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, SystemTime};

use dagr_testkit::EngineProcess;
use dagr_testkit::gql::query;
use serde_json::json;
use sha2::Digest as _;

fn start_engine() -> EngineProcess {
    EngineProcess::start(
        Path::new(env!("CARGO_BIN_EXE_dagr-engine")),
        &["--network", "none"],
    )
}

/// A session whose host is named `host_id`.
async fn connect(engine: &EngineProcess, host_id: &str) -> dagr_client::Client {
    let mut options = dagr_testkit::connect_options(&engine.host(), &std::env::temp_dir());
    options.allow_send = true;
    options.host_id = Some(host_id.to_owned());
    dagr_client::connect(options).await.unwrap()
}

/// Reads `src` in a session of `host_id` and exports the result to `out` (emptied first).
async fn read_back(engine: &EngineProcess, host_id: &str, src: &Path, out: &Path) {
    let _ = fs::remove_dir_all(out);
    let client = connect(engine, host_id).await;
    let q = format!(
        r#"{{ host {{ directory(path: {}) {{ export(path: {}) }} }} }}"#,
        json!(src),
        json!(out)
    );
    query(&client, q).await.unwrap();
    client.close().await.unwrap();
}

/// Every entry under `root`: kind, permission bits, and content digest or link target.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.mode() & 0o7777;
            let what = if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {mode:o}")
            } else if meta.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else {
                let digest = sha2::Sha256::digest(fs::read(&path).unwrap());
                format!("file {mode:o} {}", hex::encode(digest))
            };
            out.insert(rel, what);
        }
    }
    out
}

/// Waits until every entry of `root` is older than the engine's racy window (2 s): until then
/// a file is fetched again whatever its stat says.
fn settle(root: &Path) {
    let mut newest = 0i64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            newest = newest.max(meta.ctime() * 1_000_000_000 + meta.ctime_nsec());
            newest = newest.max(meta.mtime() * 1_000_000_000 + meta.mtime_nsec());
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    let settled = Duration::from_nanos(u64::try_from(newest).unwrap() + 2_100_000_000);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    if let Some(wait) = settled.checked_sub(now) {
        std::thread::sleep(wait);
    }
}

/// The engine's host read counters: (reads, unchanged reads, files fetched, bytes fetched).
fn counters(engine: &EngineProcess) -> [u64; 4] {
    let text = engine.metrics();
    [
        "dagr_host_reads_total",
        "dagr_host_reads_unchanged_total",
        "dagr_host_files_fetched_total",
        "dagr_host_bytes_fetched_total",
    ]
    .map(|name| dagr_testkit::metric(&text, name).unwrap_or(0))
}

fn delta(before: [u64; 4], after: [u64; 4]) -> [u64; 4] {
    [0, 1, 2, 3].map(|i| after[i] - before[i])
}

fn make_tree(root: &Path) {
    for d in 0..10 {
        let dir = root.join(format!("d{d}"));
        fs::create_dir_all(dir.join("sub")).unwrap();
        for f in 0..20 {
            fs::write(dir.join(format!("f{f}.txt")), format!("file {d}/{f}\n")).unwrap();
        }
        fs::write(dir.join("sub/deep"), vec![d as u8; 1000]).unwrap();
    }
    fs::write(root.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("d0/f0.txt", root.join("link")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
}

#[tokio::test]
async fn only_what_changed_travels_and_the_result_matches_the_tree() {
    let engine = start_engine();
    let host = tempfile::tempdir().unwrap();
    let (tree, out) = (host.path().join("tree"), host.path().join("out"));
    make_tree(&tree);
    settle(&tree);

    // First read: everything travels.
    let before = counters(&engine);
    read_back(&engine, "host-a", &tree, &out).await;
    assert_eq!(describe(&out), describe(&tree));
    let first = delta(before, counters(&engine));
    assert_eq!(first[2], 10 * 21 + 1, "files fetched by the first read");

    // Unchanged: no content at all, and the last result is reused as is.
    let before = counters(&engine);
    read_back(&engine, "host-a", &tree, &out).await;
    assert_eq!(describe(&out), describe(&tree));
    assert_eq!(delta(before, counters(&engine)), [1, 1, 0, 0]);

    // One changed file: that file alone.
    fs::write(tree.join("d3/f7.txt"), "a longer content than before\n").unwrap();
    let before = counters(&engine);
    read_back(&engine, "host-a", &tree, &out).await;
    assert_eq!(describe(&out), describe(&tree));
    assert_eq!(delta(before, counters(&engine)), [1, 0, 1, 29]);

    // A rename, a delete, a mode change, a symlink retarget, a new empty directory, a file
    // replaced by a directory and a directory removed with its content.
    fs::rename(tree.join("d1/f1.txt"), tree.join("d1/renamed.txt")).unwrap();
    fs::remove_file(tree.join("d2/f2.txt")).unwrap();
    fs::set_permissions(tree.join("d4/f4.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(tree.join("link")).unwrap();
    symlink("d5/sub/deep", tree.join("link")).unwrap();
    fs::create_dir(tree.join("d6/new-empty")).unwrap();
    fs::remove_file(tree.join("d7/f0.txt")).unwrap();
    fs::create_dir(tree.join("d7/f0.txt")).unwrap();
    fs::remove_dir_all(tree.join("d8")).unwrap();
    let before = counters(&engine);
    read_back(&engine, "host-a", &tree, &out).await;
    assert_eq!(describe(&out), describe(&tree));
    let changed = delta(before, counters(&engine));
    // The renamed file, the one whose mode changed (its ctime moved) and d3/f7.txt again (it
    // was as recent as the last read's listing); nothing else.
    assert_eq!(changed[2], 3, "{changed:?}");

    // Back to unchanged once settled.
    settle(&tree);
    read_back(&engine, "host-a", &tree, &out).await;
    let before = counters(&engine);
    read_back(&engine, "host-a", &tree, &out).await;
    assert_eq!(describe(&out), describe(&tree));
    assert_eq!(delta(before, counters(&engine)), [1, 1, 0, 0]);

    // Another host never builds on this one's reads, even for the same path.
    let before = counters(&engine);
    read_back(&engine, "host-b", &tree, &out).await;
    assert_eq!(describe(&out), describe(&tree));
    let files = describe(&tree)
        .values()
        .filter(|what| what.starts_with("file"))
        .count() as u64;
    assert_eq!(delta(before, counters(&engine))[1..3], [0, files]);
}

#[tokio::test]
async fn a_same_size_rewrite_within_one_mtime_tick_is_seen() {
    let engine = start_engine();
    let host = tempfile::tempdir().unwrap();
    let (tree, out) = (host.path().join("tree"), host.path().join("out"));
    fs::create_dir(&tree).unwrap();
    let file = tree.join("config");
    fs::write(&file, "value=1\n").unwrap();
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&file).unwrap());
    read_back(&engine, "host-a", &tree, &out).await;
    assert_eq!(fs::read_to_string(out.join("config")).unwrap(), "value=1\n");
    // The same size, and the mtime put back to the very nanosecond: what a rewrite within one
    // timestamp tick looks like.
    fs::write(&file, "value=2\n").unwrap();
    filetime::set_file_mtime(&file, mtime).unwrap();
    read_back(&engine, "host-a", &tree, &out).await;
    assert_eq!(fs::read_to_string(out.join("config")).unwrap(), "value=2\n");
    assert_eq!(describe(&out), describe(&tree));
}

#[tokio::test]
async fn a_tree_of_fifty_thousand_files_round_trips() {
    let engine = start_engine();
    let host = tempfile::tempdir().unwrap();
    let (tree, out) = (host.path().join("tree"), host.path().join("out"));
    for d in 0..100 {
        let dir = tree.join(format!("dir{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..500 {
            fs::write(dir.join(format!("{f}")), format!("{d}:{f}")).unwrap();
        }
    }
    settle(&tree);
    let before = counters(&engine);
    read_back(&engine, "host-a", &tree, &out).await;
    assert_eq!(delta(before, counters(&engine))[2], 50_000);
    assert_eq!(describe(&out), describe(&tree));
    // Unchanged, then one file changed.
    let before = counters(&engine);
    read_back(&engine, "host-a", &tree, &out).await;
    assert_eq!(delta(before, counters(&engine)), [1, 1, 0, 0]);
    fs::write(tree.join("dir042/42"), "changed").unwrap();
    let before = counters(&engine);
    read_back(&engine, "host-a", &tree, &out).await;
    assert_eq!(delta(before, counters(&engine)), [1, 0, 1, 7]);
    assert_eq!(describe(&out), describe(&tree));
}

/// Snapshot directories of the engine's snapshotter and the bytes of their files.
fn snapshot_usage(state: &Path) -> (usize, u64) {
    let root = state.join("worker/snapshots/snapshots");
    let count = fs::read_dir(&root).map(|d| d.count()).unwrap_or(0);
    let mut bytes = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            // Removed since listed (a copy being removed in the background).
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                bytes += meta.len();
            }
        }
    }
    (count, bytes)
}

/// Twenty sessions read one unchanged tree: from one host (incremental reads) and then from
/// twenty hosts (full reads, whose copies are removed in the background as soon as their
/// content key turns out to have a result). The state directory stays what one read left.
#[tokio::test]
async fn twenty_sessions_reading_an_unchanged_tree_store_it_once() {
    let engine = start_engine();
    let tree = tempfile::tempdir().unwrap();
    for i in 0..200 {
        fs::write(tree.path().join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
    }
    let q = format!(
        r#"{{ host {{ directory(path: {}) {{ entries }} }} }}"#,
        json!(tree.path())
    );
    settle(tree.path());
    let state = engine.dir.path().join("state");
    let mut after_first = None;
    let before = counters(&engine);
    for round in 0..40 {
        let host_id = if round < 20 {
            "one-host".to_owned()
        } else {
            format!("host-{round}")
        };
        let client = connect(&engine, &host_id).await;
        let answer = query(&client, q.clone())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(
            answer["host"]["directory"]["entries"]
                .as_array()
                .map(Vec::len),
            Some(200)
        );
        client.close().await.unwrap();
        after_first.get_or_insert_with(|| snapshot_usage(&state));
    }
    assert_eq!(delta(before, counters(&engine))[..2], [40, 19]);
    let (first_count, first_bytes) = after_first.unwrap();
    assert!(first_bytes >= 200 * 4096, "{first_bytes}");
    // Copies are removed in the background: wait for the last one to go (at most a minute).
    let start = std::time::Instant::now();
    let mut usage = snapshot_usage(&state);
    while usage != (first_count, first_bytes) && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
        usage = snapshot_usage(&state);
    }
    assert_eq!(
        usage,
        (first_count, first_bytes),
        "snapshots (directories, bytes) after one session and after forty"
    );
}
