//! Host directory reads, each against a baseline measured in the same run:
//! - a session re-reading an unchanged 50,000-file tree (`host.directory(path).sync`) vs a
//!   metadata walk of it (`find -printf` of size, mtime, mode and inode) (goal: <= 3x);
//! - the same with one 1 MiB file changed before each read vs the walk plus reading that file
//!   (goal: <= 3x);
//! - the slowdown of issue 16: reading an unchanged 5,000-file tree in sessions that only read,
//!   vs in sessions that each follow one running an uncached `withExec` (goal: the same).
//!
//! Needs root and runc (`cargo xtask bench` installs them). Plain timing (`harness = false`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use dagr_testkit::EngineProcess;
use dagr_testkit::h2c::median;
use serde_json::json;

const ROUNDS: usize = 8;

/// A session of the host "bench-host" (`incremental`) or of a host of its own (its reads are
/// full reads, as before incremental reads).
async fn session_as(engine: &EngineProcess, query: &str, incremental: bool) -> Duration {
    let start = Instant::now();
    let mut options = dagr_testkit::connect_options(&engine.host(), &std::env::temp_dir());
    options.host_id = incremental.then(|| "bench-host".into());
    let client = dagr_client::connect(options).await.expect("connect");
    dagr_testkit::gql::query(&client, query.to_owned())
        .await
        .expect("query");
    client.close().await.expect("close");
    start.elapsed()
}

async fn session(engine: &EngineProcess, query: &str) -> Duration {
    session_as(engine, query, true).await
}

fn read_query(tree: &Path) -> String {
    format!(
        r#"{{ host {{ directory(path: {}) {{ sync }} }} }}"#,
        json!(tree)
    )
}

/// A tree of `dirs` x `files` small files, left until its times are older than the engine's
/// racy window (files that recent are read again whatever their stat says).
fn make_tree(root: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("dir{d:03}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..files {
            std::fs::write(dir.join(format!("file{f}.txt")), format!("{d}/{f}\n")).expect("write");
        }
    }
    std::thread::sleep(Duration::from_millis(2100));
}

fn timed(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// `find -printf` of every entry's size, mtime, mode and inode, to /dev/null.
fn walk(tree: &Path) {
    let status = Command::new("find")
        .arg(tree)
        .args(["-printf", "%s %T@ %m %i\n"])
        .stdout(Stdio::null())
        .status()
        .expect("find");
    assert!(status.success());
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let engine = EngineProcess::start(
        Path::new(env!("CARGO_BIN_EXE_dagr-engine")),
        &["--network", "none"],
    );

    // 50,000 files: unchanged, then one changed file per read.
    let big = tempfile::tempdir().expect("tmp");
    make_tree(big.path(), 100, 500);
    let changed = big.path().join("dir050/changed.bin");
    std::fs::write(&changed, vec![0u8; 1 << 20]).expect("write");
    std::thread::sleep(Duration::from_millis(2100));
    let query = read_query(big.path());
    let first = rt.block_on(session(&engine, &query));
    println!("host sync: first read of 50,000 files: {first:?}");
    walk(big.path());
    let mut walks = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..ROUNDS {
        walks.push(timed(|| walk(big.path())));
        reads.push(rt.block_on(session(&engine, &query)));
    }
    let (walk_median, read_median) = (median(walks.clone()), median(reads.clone()));
    println!(
        "host sync: re-read of an unchanged 50,000-file tree: median {read_median:?}, \
         metadata walk {walk_median:?}: ratio {:.2} (goal <= 3)",
        read_median.as_secs_f64() / walk_median.as_secs_f64()
    );
    let mut baselines = Vec::new();
    let mut reads = Vec::new();
    for round in 0..ROUNDS {
        let content: Vec<u8> = (0..1u32 << 20).map(|i| (i as u8) ^ (round as u8)).collect();
        std::fs::write(&changed, content).expect("write");
        baselines.push(timed(|| {
            walk(big.path());
            let bytes = std::fs::read(&changed).expect("read");
            std::hint::black_box(bytes);
        }));
        reads.push(rt.block_on(session(&engine, &query)));
    }
    let (base_median, read_median) = (median(baselines.clone()), median(reads.clone()));
    println!(
        "host sync: re-read with one 1 MiB file changed: median {read_median:?}, walk + \
         reading the file {base_median:?}: ratio {:.2} (goal <= 3)",
        read_median.as_secs_f64() / base_median.as_secs_f64()
    );
    drop(engine);

    // The slowdown: reads alone vs reads that follow an uncached exec.
    let image = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone();
    let engine = EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[]);
    let small = tempfile::tempdir().expect("tmp");
    make_tree(small.path(), 50, 100);
    let query = read_query(small.path());
    rt.block_on(session(&engine, &query));
    for incremental in [true, false] {
        let kind = if incremental { "incremental" } else { "full" };
        let mut alone = Vec::new();
        for _ in 0..ROUNDS {
            alone.push(rt.block_on(session_as(&engine, &query, incremental)));
        }
        let mut after_exec = Vec::new();
        let mut execs = Vec::new();
        for _ in 0..ROUNDS {
            let nonce = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("clock")
                .as_nanos();
            let exec = format!(
                r#"{{ container {{ from(address: {}) {{ withExec(args: ["sh", "-c", "echo {nonce}"]) {{ stdout }} }} }} }}"#,
                json!(image)
            );
            execs.push(rt.block_on(session(&engine, &exec)));
            after_exec.push(rt.block_on(session_as(&engine, &query, incremental)));
        }
        let (alone, after) = (median(alone), median(after_exec));
        println!(
            "host sync: unchanged 5,000-file tree, {kind} reads: sessions that only read: median \
             {alone:?}; each after a session with one uncached exec (median {:?}): median \
             {after:?}: ratio {:.2}",
            median(execs),
            after.as_secs_f64() / alone.as_secs_f64()
        );
    }
}
