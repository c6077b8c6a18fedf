//! The reliability suite's load and chaos parts (the disk-full run is `disk.rs`, fork bombs and
//! memory hogs are the executor's limit tests, zombies its init tests). Short by default, for
//! CI; `DAGR_SOAK=long` (`cargo xtask soak`) runs the long form and prints the figures that go
//! into RELIABILITY.md:
//! - load: concurrent sessions each running mixed queries (cached and uncached execs, host
//!   uploads, exports), every answer checked, with the latency of the cached ones;
//! - chaos: a pipeline with the engine killed (SIGKILL) at a random point, then restarted on the
//!   same state: every rerun ends correct and nothing of the dead engine is left behind.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use dagr_testkit::gql::query;
use serde_json::json;

fn long() -> bool {
    std::env::var("DAGR_SOAK").is_ok_and(|v| v == "long")
}

fn engine_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dagr-engine"))
}

fn image() -> String {
    dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone()
}

fn unique() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// One session's mixed queries; returns the latencies of its cached ones.
async fn session_load(
    engine: &dagr_testkit::EngineProcess,
    queries: usize,
    upload: &Path,
) -> Vec<Duration> {
    let client = dagr_testkit::gql::connect(engine, true).await;
    let img = json!(image());
    let mut cached = Vec::new();
    for i in 0..queries {
        match i % 4 {
            0 => {
                let q = format!(
                    "{{ container {{ from(address: {img}) {{ withExec(args: [\"echo\", \"cached\"]) {{ stdout }} }} }} }}"
                );
                let t = Instant::now();
                let data = query(&client, q).await.unwrap();
                cached.push(t.elapsed());
                assert_eq!(data["container"]["from"]["withExec"]["stdout"], "cached\n");
            }
            1 => {
                let n = unique();
                let q = format!(
                    "{{ container {{ from(address: {img}) {{ withEnvVariable(name: \"N\", value: {n}) {{ withExec(args: [\"sh\", \"-c\", \"echo $N\"]) {{ stdout }} }} }} }} }}",
                    n = json!(n)
                );
                let data = query(&client, q).await.unwrap();
                assert_eq!(
                    data["container"]["from"]["withEnvVariable"]["withExec"]["stdout"],
                    format!("{n}\n")
                );
            }
            2 => {
                let q = format!(
                    "{{ host {{ directory(path: {}) {{ entries }} }} }}",
                    json!(upload.display().to_string())
                );
                let data = query(&client, q).await.unwrap();
                assert_eq!(
                    data["host"]["directory"]["entries"]
                        .as_array()
                        .unwrap()
                        .len(),
                    20
                );
            }
            _ => {
                let n = unique();
                let dest = std::env::temp_dir().join(format!("dagr-soak-{n}"));
                let q = format!(
                    "{{ directory {{ withNewFile(path: \"out.txt\", contents: {n}) {{ export(path: {dest}) }} }} }}",
                    n = json!(n),
                    dest = json!(dest.display().to_string())
                );
                query(&client, q).await.unwrap();
                assert_eq!(std::fs::read_to_string(dest.join("out.txt")).unwrap(), n);
                std::fs::remove_dir_all(&dest).unwrap();
            }
        }
    }
    client.close().await.unwrap();
    cached
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sessions_with_mixed_queries_all_answer_correctly() {
    let (sessions, queries) = if long() { (50, 20) } else { (8, 8) };
    let engine = std::sync::Arc::new(dagr_testkit::EngineProcess::start(engine_bin(), &[]));
    let upload = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::write(upload.path().join(format!("f{i}")), format!("{i}")).unwrap();
    }
    let upload = std::sync::Arc::new(upload);
    // The cached query's result exists before the load starts.
    let warm = dagr_testkit::gql::connect(&engine, false).await;
    query(
        &warm,
        format!(
            "{{ container {{ from(address: {}) {{ withExec(args: [\"echo\", \"cached\"]) {{ stdout }} }} }} }}",
            json!(image())
        ),
    )
    .await
    .unwrap();
    warm.close().await.unwrap();
    let start = Instant::now();
    let runs = (0..sessions).map(|_| {
        let (engine, upload) = (engine.clone(), upload.clone());
        tokio::spawn(async move { session_load(&engine, queries, upload.path()).await })
    });
    let mut latencies = Vec::new();
    for run in futures::future::join_all(runs).await {
        latencies.extend(run.unwrap());
    }
    let total = start.elapsed();
    latencies.sort();
    println!(
        "load: {sessions} sessions x {queries} mixed queries in {total:?}; cached queries p50 {:?}, p99 {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    engine.wait_metric("dagr_sessions_active", 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_then_restart_ends_correct_and_clean() {
    let iterations = if long() { 50 } else { 4 };
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    let runc_root = state.join("worker/exec/runc");
    let img = json!(image());
    let mut killed_mid_run = 0;
    for i in 0..iterations {
        let n = unique();
        // Uncached each time: an exec writing a file, read back, and an export.
        let pipeline = format!(
            "{{ container {{ from(address: {img}) {{ withEnvVariable(name: \"N\", value: {n}) {{ withExec(args: [\"sh\", \"-c\", \"sleep 0.2; echo $N > /out\"]) {{ file(path: \"/out\") {{ contents }} }} }} }} }} }}",
            n = json!(n)
        );
        let mut engine = dagr_testkit::EngineProcess::start_in(
            engine_bin(),
            base.path(),
            tempfile::tempdir().unwrap(),
            &[],
        );
        let client = std::sync::Arc::new(dagr_testkit::gql::connect(&engine, false).await);
        // Its answer is lost with the engine: only the rerun's counts.
        let running = {
            let (client, pipeline) = (client.clone(), pipeline.clone());
            tokio::spawn(async move { client.query(json!({ "query": pipeline })).await })
        };
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 600)).await;
        if !running.is_finished() {
            killed_mid_run += 1;
        }
        engine.child.kill().unwrap();
        let _ = engine.child.wait();
        let _ = running.await;
        drop(client);
        drop(engine);

        // Restarted on the same state: the pipeline runs to the right answer, and nothing of
        // the dead engine is left.
        let engine = dagr_testkit::EngineProcess::start_in(
            engine_bin(),
            base.path(),
            tempfile::tempdir().unwrap(),
            &[],
        );
        assert_eq!(
            dagr_testkit::runtime_containers(&runc_root),
            "",
            "iteration {i}: containers left"
        );
        let client = dagr_testkit::gql::connect(&engine, false).await;
        let data = query(&client, pipeline).await.unwrap();
        assert_eq!(
            data["container"]["from"]["withEnvVariable"]["withExec"]["file"]["contents"],
            format!("{n}\n"),
            "iteration {i}"
        );
        client.close().await.unwrap();
        engine.wait_metric("dagr_sessions_active", 0);
        drop(engine);
        assert_eq!(
            dagr_testkit::runtime_containers(&runc_root),
            "",
            "iteration {i}: containers left"
        );
        assert_eq!(
            dagr_testkit::mounts_under(base.path()),
            Vec::<String>::new(),
            "iteration {i}: mounts left"
        );
    }
    println!(
        "chaos: {iterations} kills ({killed_mid_run} while the pipeline ran), every rerun correct and clean"
    );
}

/// `(open fds, threads, RSS in KiB)` of process `pid`.
fn process_figures(pid: u32) -> (usize, u64, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (fds, field("Threads:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_close_cycles_leave_nothing_growing() {
    let cycles = if long() { 1000 } else { 100 };
    let engine = dagr_testkit::EngineProcess::start(engine_bin(), &[]);
    let cycle = || async {
        let client = dagr_testkit::gql::connect(&engine, false).await;
        query(&client, "{ version }".to_owned()).await.unwrap();
        client.close().await.unwrap();
    };
    // Warm-up: allocator pools, lazily started runtime threads.
    for _ in 0..50 {
        cycle().await;
    }
    engine.wait_metric("dagr_sessions_active", 0);
    let pid = engine.child.id();
    let tasks = || dagr_testkit::metric(&engine.metrics(), "dagr_runtime_alive_tasks").unwrap_or(0);
    let mounts = || dagr_testkit::mounts_under(engine.dir.path()).len();
    let (fds, threads, rss) = process_figures(pid);
    let (tasks_before, mounts_before) = (tasks(), mounts());
    for _ in 0..cycles {
        cycle().await;
    }
    engine.wait_metric("dagr_sessions_active", 0);
    let (fds_after, threads_after, rss_after) = process_figures(pid);
    let (tasks_after, mounts_after) = (tasks(), mounts());
    println!(
        "cycles: {cycles} connect/close; fds {fds} -> {fds_after}, threads {threads} -> {threads_after}, tasks {tasks_before} -> {tasks_after}, mounts {mounts_before} -> {mounts_after}, RSS {rss} -> {rss_after} KiB ({:+.1}%)",
        (rss_after as f64 - rss as f64) * 100.0 / rss as f64
    );
    assert!(fds_after <= fds + 2, "fds grew from {fds} to {fds_after}");
    assert!(
        threads_after <= threads + 2,
        "threads grew from {threads} to {threads_after}"
    );
    assert!(
        tasks_after <= tasks_before + 2,
        "tasks grew from {tasks_before} to {tasks_after}"
    );
    assert_eq!(mounts_after, mounts_before);
    assert!(
        rss_after <= rss + rss / 20,
        "RSS grew by more than 5%: {rss} KiB -> {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_factory_leaves_no_zombies() {
    let engine = dagr_testkit::EngineProcess::start(engine_bin(), &[]);
    let client = dagr_testkit::gql::connect(&engine, false).await;
    // 1000 orphans (each a double fork); the init as PID 1 reaps them all.
    let script = "for i in $(seq 1 1000); do (sleep 0.01 &); done; sleep 1; ps -o stat | grep -c '^Z' || true";
    let data = query(
        &client,
        format!(
            "{{ container {{ from(address: {}) {{ withEnvVariable(name: \"N\", value: {}) {{ withExec(args: [\"sh\", \"-c\", {}]) {{ stdout }} }} }} }} }}",
            json!(image()),
            json!(unique()),
            json!(script)
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        data["container"]["from"]["withEnvVariable"]["withExec"]["stdout"],
        "0\n"
    );
    client.close().await.unwrap();
}
