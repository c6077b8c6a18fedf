//! Reading the client's tree: an unchanged tree read by many sessions is stored once (the
//! copies of later reads are removed, in the background, as soon as their content key turns
//! out to have a result).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use dagr_testkit::gql::query;
use serde_json::json;

/// Snapshot directories of the engine's snapshotter and the bytes of their files.
fn snapshot_usage(state: &Path) -> (usize, u64) {
    let root = state.join("worker/snapshots/snapshots");
    let count = std::fs::read_dir(&root).map(|d| d.count()).unwrap_or(0);
    let mut bytes = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                bytes += meta.len();
            }
        }
    }
    (count, bytes)
}

#[tokio::test]
async fn twenty_sessions_reading_an_unchanged_tree_store_it_once() {
    let engine = dagr_testkit::EngineProcess::start(
        Path::new(env!("CARGO_BIN_EXE_dagr-engine")),
        &["--network", "none"],
    );
    let tree = tempfile::tempdir().unwrap();
    for i in 0..200 {
        std::fs::write(tree.path().join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
    }
    let read = json!(format!(
        r#"{{ host {{ directory(path: {}) {{ entries }} }} }}"#,
        json!(tree.path())
    ));
    let q = read.as_str().unwrap().to_owned();
    let state = engine.dir.path().join("state");
    let mut after_first = None;
    for _ in 0..20 {
        let client = dagr_testkit::gql::connect(&engine, false).await;
        let answer = query(&client, q.clone()).await.unwrap();
        assert_eq!(
            answer["host"]["directory"]["entries"]
                .as_array()
                .map(Vec::len),
            Some(200)
        );
        client.close().await.unwrap();
        after_first.get_or_insert_with(|| snapshot_usage(&state));
    }
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
        "snapshots (directories, bytes) after one session and after twenty"
    );
}
