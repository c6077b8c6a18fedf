//! Content store: atomic, verified, deduplicated blob writes.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use dagr_snapshot::{ContentError, ContentStore, Digest};
use tokio::io::AsyncWriteExt as _;

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[tokio::test]
async fn put_read_size_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let d = store.put_bytes(b"hello").await.unwrap();
    assert_eq!(d, Digest::of_bytes(b"hello"));
    assert!(store.has(&d));
    assert_eq!(store.size(&d).unwrap(), 5);
    assert_eq!(store.read_bytes(&d).await.unwrap(), b"hello");
    assert_eq!(std::fs::read(store.blob_path(&d)).unwrap(), b"hello");
    // Deduplicated: a second put of the same bytes is the same blob.
    assert_eq!(store.put_bytes(b"hello").await.unwrap(), d);
    assert_eq!(store.list().unwrap().len(), 1);
    store.delete(&d).unwrap();
    assert!(!store.has(&d));
    assert!(matches!(store.read_bytes(&d).await, Err(ContentError::NotFound(x)) if x == d));
    assert!(matches!(store.delete(&d), Err(ContentError::NotFound(_))));
    assert!(matches!(store.size(&d), Err(ContentError::NotFound(_))));
}

#[tokio::test]
async fn blob_invisible_until_commit_and_dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let data = vec![7u8; 100_000];
    let d = Digest::of_bytes(&data);
    let mut w = store.writer(Some(d.clone())).await.unwrap();
    w.write_all(&data[..50_000]).await.unwrap();
    w.flush().await.unwrap();
    assert!(!store.has(&d));
    assert_eq!(count_entries(&dir.path().join("ingest")), 1);
    drop(w);
    assert_eq!(count_entries(&dir.path().join("ingest")), 0);
    assert!(!store.has(&d));

    let mut w = store.writer(Some(d.clone())).await.unwrap();
    w.write_all(&data).await.unwrap();
    assert_eq!(w.written(), 100_000);
    assert!(!store.has(&d));
    assert_eq!(w.commit().await.unwrap(), d);
    assert!(store.has(&d));
    assert_eq!(count_entries(&dir.path().join("ingest")), 0);
}

#[tokio::test]
async fn digest_mismatch_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let expected = Digest::of_bytes(b"expected content");
    let mut w = store.writer(Some(expected.clone())).await.unwrap();
    w.write_all(b"tampered content").await.unwrap();
    let err = w.commit().await.unwrap_err();
    let actual = Digest::of_bytes(b"tampered content");
    match &err {
        ContentError::DigestMismatch {
            expected: e,
            actual: a,
        } => {
            assert_eq!(e, &expected);
            assert_eq!(a, &actual);
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&expected.to_string()) && msg.contains(&actual.to_string()),
        "{msg}"
    );
    assert!(!store.has(&expected));
    assert!(!store.has(&actual));
    assert_eq!(count_entries(&dir.path().join("ingest")), 0);
    assert_eq!(count_entries(&dir.path().join("blobs/sha256")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_the_same_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::of_bytes(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let data = data.clone();
        let expected = if i % 2 == 0 { Some(d.clone()) } else { None };
        tasks.push(tokio::spawn(async move {
            let mut w = store.writer(expected).await.unwrap();
            for chunk in data.chunks(4096 + i) {
                w.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            w.commit().await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), d);
    }
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(std::fs::read(store.blob_path(&d)).unwrap(), data);
    assert_eq!(count_entries(&dir.path().join("ingest")), 0);
}

#[tokio::test]
async fn open_removes_stale_temp_files_and_read_detects_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let d = store.put_bytes(b"manifest").await.unwrap();
    let mut w = store.writer(None).await.unwrap();
    w.write_all(b"half written").await.unwrap();
    // Simulate a crash: the writer's destructor never runs.
    std::mem::forget(w);
    assert_eq!(count_entries(&dir.path().join("ingest")), 1);
    drop(store);
    let store = ContentStore::open(dir.path()).unwrap();
    assert_eq!(count_entries(&dir.path().join("ingest")), 0);
    assert!(store.has(&d));

    std::fs::write(store.blob_path(&d), b"bit rot").unwrap();
    let err = store.read_bytes(&d).await.unwrap_err();
    assert!(matches!(err, ContentError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&d.to_string()));
}

#[tokio::test]
async fn open_blob_streams_content() {
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let d = store.put_bytes(b"layer bytes").await.unwrap();
    let mut f = store.open_blob(&d).await.unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).await.unwrap();
    assert_eq!(s, "layer bytes");
    let missing = Digest::of_bytes(b"nope");
    assert!(matches!(
        store.open_blob(&missing).await,
        Err(ContentError::NotFound(_))
    ));
}
