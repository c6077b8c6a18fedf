//! Layer apply and diff throughput, and content store writes.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dagr_snapshot::{
    ApplyOptions, Backend, ContentStore, Snapshotter, SnapshotterOptions, apply_layer,
};

/// A gzip layer of `files` small files spread over 20 directories.
fn layer(files: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..files {
        let data = vec![b'a' + (i % 26) as u8; 512 + i % 4096];
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, format!("usr/share/d{}/file-{i}", i % 20), &data[..])
            .unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn bench(c: &mut Criterion) {
    let blob = layer(1000);
    c.bench_function("apply_layer 1000 files (gzip)", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                apply_layer(&blob[..], dir.path(), &ApplyOptions::default()).unwrap();
                // Returned so that deleting the tree is not timed.
                dir
            },
            BatchSize::PerIteration,
        )
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&dir.path().join("content")).unwrap();
    let mut n = 0u64;
    c.bench_function("content put_bytes 1 MiB", |b| {
        b.iter(|| {
            n += 1;
            let mut data = vec![0u8; 1 << 20];
            data[..8].copy_from_slice(&n.to_le_bytes());
            rt.block_on(store.put_bytes(&data)).unwrap()
        })
    });

    let snapshotter = Snapshotter::open(
        &dir.path().join("state"),
        SnapshotterOptions {
            backend: Some(Backend::Overlay),
        },
    )
    .unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    rt.block_on(snapshotter.prepare("a", None)).unwrap();
    {
        let _g = snapshotter.mount("a", &target).unwrap();
        apply_layer(&blob[..], &target, &ApplyOptions::default()).unwrap();
    }
    rt.block_on(snapshotter.commit("base", "a")).unwrap();
    c.bench_function("diff 1000 files to gzip layer (overlay)", |b| {
        b.iter(|| rt.block_on(snapshotter.diff(&store, "base")).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
