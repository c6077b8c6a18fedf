//! Pulling the busybox fixture from a loopback `docker-registry` with our client vs
//! `skopeo copy` to an OCI layout (both into empty destinations). Prints the median ratio.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dagr_registry::{Anonymous, Platform, Reference, RegistryClient, RegistryConfig};
use dagr_snapshot::ContentStore;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn bench_pull(c: &mut Criterion) {
    let fixture = common::fixture();
    let registry = common::Registry::start();
    common::skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", fixture.layout.display()),
        &format!("docker://{}/bench/busybox:latest", registry.addr),
    ]);
    let reference = Reference::parse(&format!("{}/bench/busybox:latest", registry.addr)).unwrap();
    let client = RegistryClient::new(RegistryConfig::default(), Arc::new(Anonymous));
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let ours = || {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let start = Instant::now();
        runtime
            .block_on(client.pull(&reference, &Platform::default(), &store))
            .unwrap();
        start.elapsed()
    };
    let skopeo = || {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        common::skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:latest", dir.path().join("layout").display()),
        ]);
        start.elapsed()
    };
    let ours_median = median((0..15).map(|_| ours()).collect());
    let skopeo_median = median((0..15).map(|_| skopeo()).collect());
    println!(
        "pull busybox fixture: dagr {ours_median:?}, skopeo copy {skopeo_median:?}, ratio dagr/skopeo {:.3}",
        ours_median.as_secs_f64() / skopeo_median.as_secs_f64()
    );

    let mut group = c.benchmark_group("pull_fixture");
    group.sample_size(20);
    group.bench_function("dagr_pull", |b| {
        b.to_async(&runtime).iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = ContentStore::open(dir.path()).unwrap();
                (dir, store)
            },
            |(dir, store)| {
                let client = client.clone();
                let reference = reference.clone();
                async move {
                    client
                        .pull(&reference, &Platform::default(), &store)
                        .await
                        .unwrap();
                    drop(dir);
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("skopeo_copy", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                common::skopeo(&[
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    &format!("docker://{reference}"),
                    &format!("oci:{}:latest", dir.path().join("layout").display()),
                ]);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    drop(registry);
}

criterion_group!(benches, bench_pull);
criterion_main!(benches);
