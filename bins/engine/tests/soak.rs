//! The reliability suite's load and chaos parts (the disk-full run is `disk.rs`, fork bombs and
//! memory hogs are the executor's limit tests, zombies its init tests). Short by default, for
//! CI; `DAGR_SOAK=long` (`cargo xtask soak`) runs the long form and prints the figures that go
//! into RELIABILITY.md:
//! - load: concurrent sessions each running mixed queries (cached and uncached execs, host
//!   uploads, exports), every answer checked, with the latency of the cached ones;
//! - chaos: a pipeline with the engine killed (SIGKILL) at a random point, then restarted on the
//!   same state: every rerun ends correct and nothing of the dead engine is left behind;
//! - chaos by phase: the same, with each kill at a chosen phase (a pull, an unpack, an exec, a
//!   commit, a push, a collection), found by watching a proxy in front of the registry, the
//!   exec's process, or a prune request.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// An engine started again on the state under `base` after a SIGKILL; no container of the
/// dead one may be left (`what`: the iteration, for the message).
fn restart(base: &Path, what: &str) -> dagr_testkit::EngineProcess {
    let engine = dagr_testkit::EngineProcess::start_in(
        engine_bin(),
        base,
        tempfile::tempdir().unwrap(),
        &[],
    );
    assert_eq!(
        dagr_testkit::runtime_containers(&base.join("state/run/runtime")),
        "",
        "{what}: containers left"
    );
    engine
}

/// No container and no mount under `base` once its engine is gone.
fn assert_nothing_left(base: &Path, what: &str) {
    assert_eq!(
        dagr_testkit::runtime_containers(&base.join("state/run/runtime")),
        "",
        "{what}: containers left"
    );
    assert_eq!(
        dagr_testkit::mounts_under(base),
        Vec::<String>::new(),
        "{what}: mounts left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_then_restart_ends_correct_and_clean() {
    let iterations = if long() { 50 } else { 4 };
    let base = tempfile::tempdir().unwrap();
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
        let engine = restart(base.path(), &format!("iteration {i}"));
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
        assert_nothing_left(base.path(), &format!("iteration {i}"));
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

/// The phase of a pipeline the engine is killed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// While a layer's blob comes from the registry.
    Pull,
    /// Right after the last byte of the image came: verifying and unpacking its layers.
    Unpack,
    /// While an exec's process runs.
    Exec,
    /// Right after an exec's process ended: the engine keeps what it wrote.
    Commit,
    /// While the engine pushes a layer to a registry.
    Export,
    /// During a collection of everything no session holds (`POST /cache/prune`).
    Gc,
}

const PHASES: [Phase; 6] = [
    Phase::Pull,
    Phase::Unpack,
    Phase::Exec,
    Phase::Commit,
    Phase::Export,
    Phase::Gc,
];

/// A TCP proxy in front of a registry that counts the bytes each way and, when throttled, lets
/// them through slowly (16 KiB every 2 ms), so that a kill lands in the middle of a transfer.
struct RegistryProxy {
    addr: String,
    /// Registry -> engine.
    down: Arc<AtomicU64>,
    /// Engine -> registry.
    up: Arc<AtomicU64>,
    throttled: Arc<AtomicBool>,
    _accepting: tokio::task::JoinHandle<()>,
}

impl RegistryProxy {
    async fn start(registry: &str) -> RegistryProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (down, up) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let throttled = Arc::new(AtomicBool::new(false));
        let accepting = {
            let (registry, down, up, throttled) = (
                registry.to_owned(),
                down.clone(),
                up.clone(),
                throttled.clone(),
            );
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = tokio::net::TcpStream::connect(&registry).await else {
                        continue;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(Self::pump(
                        server_read,
                        client_write,
                        down.clone(),
                        throttled.clone(),
                    ));
                    tokio::spawn(Self::pump(
                        client_read,
                        server_write,
                        up.clone(),
                        throttled.clone(),
                    ));
                }
            })
        };
        RegistryProxy {
            addr,
            down,
            up,
            throttled,
            _accepting: accepting,
        }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        count: Arc<AtomicU64>,
        throttled: Arc<AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let slow = throttled.load(Ordering::SeqCst);
            let len = if slow { 16 << 10 } else { buf.len() };
            let n = match from.read(&mut buf[..len]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
            count.fetch_add(n as u64, Ordering::SeqCst);
            if slow {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let _ = to.shutdown().await;
    }

    /// Resolves once `count` has gone `by` bytes past `from`.
    async fn passed(count: &AtomicU64, from: u64, by: u64) {
        while count.load(Ordering::SeqCst) < from + by {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Size of the random layer of the images the chaos pulls and pushes.
const LAYER_BYTES: u64 = 4_000_000;

/// Publishes an image of `base` with a layer of its own (a random 4 MB file and 500 small ones
/// naming `n`) to `registry`, from a publisher engine; returns its address (a tag).
async fn publish_source(
    publisher: &dagr_client::Client,
    base: &str,
    registry: &str,
    n: &str,
) -> String {
    let tag = format!("{registry}/chaos-src:{n}");
    let script = format!(
        "mkdir /d && head -c {LAYER_BYTES} /dev/urandom > /d/big && for i in $(seq 1 500); do echo {n} > /d/f$i; done"
    );
    query(
        publisher,
        format!(
            "{{ container {{ from(address: {}) {{ withExec(args: [\"sh\", \"-c\", {}]) {{ publish(address: {}) }} }} }} }}",
            json!(base),
            json!(script),
            json!(tag)
        ),
    )
    .await
    .unwrap();
    tag
}

/// `POST /cache/prune` of everything no session holds; `true` once answered.
fn prune(engine: &SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(engine) else {
        return false;
    };
    let request = "POST /cache/prune HTTP/1.1\r\nHost: dagger\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).is_ok() && answer.starts_with("HTTP/1.1 200")
}

/// One phase's pipeline: the query, and the script its exec runs (`sh -c SCRIPT`, by which
/// its process is found).
fn phase_pipeline(
    phase: Phase,
    n: &str,
    base: &str,
    source: &str,
    proxy: &str,
) -> (String, String) {
    let (from, script) = match phase {
        Phase::Pull | Phase::Unpack => (source, format!("cat /d/f500 > /out; echo {n} >> /out")),
        Phase::Exec | Phase::Gc => (base, format!("sleep 1; echo {n} > /out; echo {n} >> /out")),
        Phase::Commit => (
            base,
            format!("head -c 30000000 /dev/urandom > /big; echo {n} > /out; echo {n} >> /out"),
        ),
        Phase::Export => (
            base,
            format!("head -c {LAYER_BYTES} /dev/urandom > /big; echo {n} > /out; echo {n} >> /out"),
        ),
    };
    let answer = match phase {
        Phase::Export => format!(
            "publish(address: {})",
            json!(format!("{proxy}/chaos-out:{n}"))
        ),
        _ => "file(path: \"/out\") { contents }".to_owned(),
    };
    let query = format!(
        "{{ container {{ from(address: {}) {{ withExec(args: [\"sh\", \"-c\", {}]) {{ {answer} }} }} }} }}",
        json!(from),
        json!(script)
    );
    (query, script)
}

/// Checks a phase pipeline's answer.
fn check_answer(phase: Phase, n: &str, data: &serde_json::Value, iteration: usize) {
    if phase == Phase::Export {
        let published = data["container"]["from"]["withExec"]["publish"]
            .as_str()
            .unwrap_or_default();
        assert!(
            published.contains(&format!("chaos-out:{n}@sha256:")),
            "iteration {iteration} ({phase:?}): published {published:?}"
        );
    } else {
        assert_eq!(
            data["container"]["from"]["withExec"]["file"]["contents"],
            format!("{n}\n{n}\n"),
            "iteration {iteration} ({phase:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_each_phase_then_restart_ends_correct_and_clean() {
    let iterations = if long() { 50 } else { PHASES.len() };
    let base = tempfile::tempdir().unwrap();
    let registry = dagr_testkit::scratch_registry::ScratchRegistry::start(None);
    let proxy = RegistryProxy::start(&registry.addr).await;
    let publisher_engine = dagr_testkit::EngineProcess::start(engine_bin(), &[]);
    let publisher = dagr_testkit::gql::connect(&publisher_engine, false).await;
    let busybox = image();
    let mut landed = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for i in 0..iterations {
        let phase = PHASES[i % PHASES.len()];
        let n = unique();
        let source = match phase {
            Phase::Pull | Phase::Unpack => {
                // Pulled through the proxy: the publisher pushed straight to the registry.
                let tag = publish_source(&publisher, &busybox, &registry.addr, &n).await;
                tag.replace(&registry.addr, &proxy.addr)
            }
            _ => String::new(),
        };
        let (pipeline, script) = phase_pipeline(phase, &n, &busybox, &source, &proxy.addr);
        let mut engine = dagr_testkit::EngineProcess::start_in(
            engine_bin(),
            base.path(),
            tempfile::tempdir().unwrap(),
            &[],
        );
        let client = Arc::new(dagr_testkit::gql::connect(&engine, false).await);
        let (down, up) = (
            proxy.down.load(Ordering::SeqCst),
            proxy.up.load(Ordering::SeqCst),
        );
        proxy.throttled.store(
            matches!(phase, Phase::Pull | Phase::Export),
            Ordering::SeqCst,
        );
        // The pipeline (or, for GC, a prune after it ran); its answer is lost with the engine.
        let running = if phase == Phase::Gc {
            let data = query(&client, pipeline.clone()).await.unwrap();
            check_answer(phase, &n, &data, i);
            let tcp = engine.tcp;
            tokio::task::spawn_blocking(move || prune(&tcp))
        } else {
            let (client, pipeline) = (client.clone(), pipeline.clone());
            tokio::spawn(async move { client.query(json!({ "query": pipeline })).await.is_ok() })
        };
        let argv = ["sh", "-c", script.as_str()];
        let mut reached = tokio::time::timeout(Duration::from_secs(60), async {
            match phase {
                Phase::Pull => RegistryProxy::passed(&proxy.down, down, LAYER_BYTES / 4).await,
                Phase::Unpack => RegistryProxy::passed(&proxy.down, down, LAYER_BYTES).await,
                Phase::Export => RegistryProxy::passed(&proxy.up, up, LAYER_BYTES / 4).await,
                Phase::Exec | Phase::Commit => {
                    while dagr_testkit::processes_running(&argv).is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    if phase == Phase::Commit {
                        while !dagr_testkit::processes_running(&argv).is_empty() {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                Phase::Gc => {
                    tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 20)).await
                }
            }
        })
        .await
        .is_ok();
        reached &= !running.is_finished();
        engine.child.kill().unwrap();
        let _ = engine.child.wait();
        println!("chaos: iteration {i}, killed in {phase:?}: {reached}");
        let entry = landed.entry(format!("{phase:?}")).or_default();
        entry.0 += 1;
        entry.1 += usize::from(reached);
        let _ = running.await;
        drop(client);
        drop(engine);
        // The exec died with the engine.
        dagr_testkit::wait_processes(&argv, false, "an exec of the killed engine");

        // Restarted on the same state: the pipeline runs to the right answer, and nothing of
        // the dead engine is left.
        proxy.throttled.store(false, Ordering::SeqCst);
        let engine = restart(base.path(), &format!("iteration {i} ({phase:?})"));
        let client = dagr_testkit::gql::connect(&engine, false).await;
        let data = query(&client, pipeline).await.unwrap();
        check_answer(phase, &n, &data, i);
        client.close().await.unwrap();
        engine.wait_metric("dagr_sessions_active", 0);
        assert!(
            prune(&engine.tcp),
            "iteration {i} ({phase:?}): a prune after the restart"
        );
        drop(engine);
        assert_nothing_left(base.path(), &format!("iteration {i} ({phase:?})"));
    }
    // A kill that came after the answer is no test of its phase: most must land in it (a
    // prune has no sign of progress to wait for, so its kills land where they land).
    let summary: Vec<String> = landed
        .iter()
        .map(|(phase, (kills, inside))| format!("{phase} {inside}/{kills}"))
        .collect();
    println!(
        "chaos by phase (kills inside the phase / kills): {}",
        summary.join(", ")
    );
    for (phase, (kills, inside)) in landed.iter().filter(|(phase, _)| *phase != "Gc") {
        assert!(
            *inside * 2 >= *kills,
            "{phase}: only {inside} of {kills} kills landed before the answer"
        );
    }
}
