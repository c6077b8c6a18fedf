//! The remote cache, each figure against a baseline measured in the same run:
//! - a 3-step pipeline that produces a 50 MiB layer, on fresh engines reading engine A's
//!   export (`--cache-from`) vs the same pipeline cold on fresh engines without it (goal: the
//!   cache at least 3x faster);
//! - `Client::close` of a session whose export runs (`--cache-to`) vs one without export
//!   (goal: unchanged within noise).
//!
//! Needs root, runc, docker-registry and skopeo (`cargo xtask bench` installs them). Plain
//! timing (`harness = false` without criterion): each sample needs a fresh engine.

use std::path::Path;
use std::time::{Duration, Instant};

use dagr_testkit::EngineProcess;
use dagr_testkit::h2c::median;
use dagr_testkit::scratch_registry::ScratchRegistry;
use serde_json::json;

const ROUNDS: usize = 5;

fn engine(args: &[&str]) -> EngineProcess {
    EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), args)
}

/// 50 MiB of random bytes, their digest, the digest printed.
fn pipeline(image: &str, marker: &str) -> String {
    format!(
        r#"{{ container {{ from(address: {img}) {{
            withExec(args: ["sh", "-c", {first}]) {{
              withExec(args: ["sh", "-c", "sha256sum /big > /sum"]) {{
                withExec(args: ["cat", "/sum"]) {{ stdout }} }} }} }} }} }}"#,
        img = json!(image),
        first = json!(format!(
            "echo {marker} > /marker; head -c 52428800 /dev/urandom > /big"
        )),
    )
}

/// Connects, runs `query`, closes: (time to the answer, time `close` took).
async fn session(engine: &EngineProcess, query: &str) -> (Duration, Duration) {
    let start = Instant::now();
    let client = dagr_testkit::gql::connect(engine, false).await;
    dagr_testkit::gql::query(&client, query.to_owned())
        .await
        .expect("pipeline");
    let answered = start.elapsed();
    let closing = Instant::now();
    client.close().await.expect("close");
    (answered, closing.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let image = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let registry = ScratchRegistry::start(None);
    let reference = format!("{}/cache:bench", registry.addr);
    let marker = hex::encode(rand::random::<[u8; 6]>());
    let query = pipeline(&image, &marker);

    let a = engine(&[
        "--cache-to",
        &format!("type=registry,ref={reference},mode=max"),
    ]);
    let export_start = Instant::now();
    rt.block_on(session(&a, &query));
    a.wait_metric("dagr_remote_cache_exports_total", 1);
    println!(
        "remote cache: engine A ran and exported the pipeline in {:?}",
        export_start.elapsed()
    );

    let mut remote = Vec::new();
    let mut cold = Vec::new();
    for _ in 0..ROUNDS {
        let b = engine(&["--cache-from", &format!("type=registry,ref={reference}")]);
        remote.push(rt.block_on(session(&b, &query)).0);
        assert_eq!(
            dagr_testkit::metric(&b.metrics(), "dagr_execs_run_total"),
            Some(0),
            "the cached pipeline ran an exec"
        );
        drop(b);
        let c = engine(&[]);
        cold.push(rt.block_on(session(&c, &query)).0);
    }
    let (remote, cold) = (median(remote), median(cold));
    println!(
        "remote cache: 3-step pipeline with a 50 MiB layer on a fresh engine: with A's cache median {remote:?}, cold without it median {cold:?}: {:.1}x faster (goal >= 3x)",
        cold.as_secs_f64() / remote.as_secs_f64()
    );

    // Close latency: every round's pipeline is new (its own marker), so the exporting engine
    // has an export to run after each session.
    let exporting = engine(&[
        "--cache-to",
        &format!("type=registry,ref={reference}-close,mode=max"),
    ]);
    let plain = engine(&[]);
    let mut with_export = Vec::new();
    let mut without = Vec::new();
    for round in 0..ROUNDS {
        let q = pipeline(&image, &format!("{marker}-close-{round}"));
        with_export.push(rt.block_on(session(&exporting, &q)).1);
        exporting.wait_metric("dagr_remote_cache_exports_total", round as u64 + 1);
        without.push(rt.block_on(session(&plain, &q)).1);
    }
    let (with_export, without) = (median(with_export), median(without));
    println!(
        "remote cache: close of a session whose export runs: median {with_export:?}, without export: median {without:?}: {:.2}x (goal: unchanged within noise)",
        with_export.as_secs_f64() / without.as_secs_f64()
    );
}
