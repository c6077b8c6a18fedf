//! Pulling a host directory over the attachables connection vs `tar -c | tar -x` through a pipe,
//! in the same run: 10,000 small files, and one 1 GiB file (dense, random-ish content).
//! Prints the ratio of mean times (dagr / tar) for each case. Measured on the 2-core dev VM:
//! 10k files 0.81 (both bound by file creation, ~10 s), 1 GiB 1.14 (2.3 s vs 2.0 s).
#![allow(clippy::unwrap_used)] // bench setup may unwrap

#[path = "../tests/common/mod.rs"]
mod common;

use std::cell::Cell;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dagr_attach::HostProviders;

fn small_files(root: &Path) {
    for d in 0..100 {
        let dir = root.join(format!("dir{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(
                dir.join(format!("file{f:03}.txt")),
                format!("{d}/{f}\n").repeat(20),
            )
            .unwrap();
        }
    }
}

fn big_file(root: &Path) {
    fs::create_dir_all(root).unwrap();
    let mut file = fs::File::create(root.join("big.bin")).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..1024 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        file.write_all(&block).unwrap();
    }
}

fn tar_pipe(src: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg("tar -C \"$1\" -cf - . | tar -C \"$2\" -xf -")
        .arg("sh")
        .arg(src)
        .arg(dest)
        .status()
        .unwrap();
    assert!(status.success());
}

fn compare(c: &mut Criterion, name: &str, setup: fn(&Path)) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("src");
    setup(&src);
    let work = tempfile::tempdir().unwrap();
    let pair = runtime.block_on(common::connect_pair(HostProviders::new(
        host.path().to_path_buf(),
    )));

    let dagr_total = Cell::new((Duration::ZERO, 0u64));
    let tar_total = Cell::new((Duration::ZERO, 0u64));
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.bench_function("dagr_pull_dir", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let dest = work.path().join("dagr");
                let start = Instant::now();
                runtime
                    .block_on(pair.client.pull_dir("src", &[], &[], &dest))
                    .unwrap();
                spent += start.elapsed();
                fs::remove_dir_all(&dest).unwrap();
            }
            let (t, n) = dagr_total.get();
            dagr_total.set((t + spent, n + iters));
            spent
        })
    });
    group.bench_function("tar_pipe", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let dest = work.path().join("tar");
                let start = Instant::now();
                tar_pipe(&src, &dest);
                spent += start.elapsed();
                fs::remove_dir_all(&dest).unwrap();
            }
            let (t, n) = tar_total.get();
            tar_total.set((t + spent, n + iters));
            spent
        })
    });
    group.finish();
    let mean = |cell: &Cell<(Duration, u64)>| {
        let (t, n) = cell.get();
        t.as_secs_f64() / n.max(1) as f64
    };
    let (dagr, tar) = (mean(&dagr_total), mean(&tar_total));
    if dagr_total.get().1 == 0 || tar_total.get().1 == 0 {
        // Filtered out on the command line.
        return;
    }
    println!(
        "{name}: dagr pull_dir {:.1} ms, tar -c | tar -x {:.1} ms, ratio dagr/tar = {:.2}",
        dagr * 1e3,
        tar * 1e3,
        dagr / tar
    );
    drop(pair);
}

fn benches(c: &mut Criterion) {
    compare(c, "10k_small_files", small_files);
    compare(c, "one_1GiB_file", big_file);
}

criterion_group!(transfer, benches);
criterion_main!(transfer);
