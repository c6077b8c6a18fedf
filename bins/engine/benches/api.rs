//! Engine API benchmarks, each against a baseline measured in the same run:
//! - `connect`: `dagr_client::connect` to ready (attachables included) then close; median and p99.
//! - `query_version`: a `{version}` round trip over h2c on a live session vs a bare hyper h2c server in
//!   this process answering the same bytes; prints the ratio (goal: within 1.5x).

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use dagr_testkit::h2c::{self, Sender as H2, bare_server, post};

const VERSION_BODY: &str = r#"{"query":"{version}"}"#;

async fn round_trip(send: &mut H2, metadata: Option<&str>) -> Bytes {
    post(send, metadata, &Bytes::from_static(VERSION_BODY.as_bytes())).await
}

fn median_and_p99(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
    (median, p99)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let engine = dagr_testkit::EngineProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_dagr-engine")),
        &[],
    );
    let host: dagr_client::EngineHost = format!("tcp://{}", engine.tcp).parse().expect("host");
    let connect_once = |host: dagr_client::EngineHost| async move {
        let opts = opts(host);
        let start = Instant::now();
        let client = dagr_client::connect(opts).await.expect("connect");
        let ready = start.elapsed();
        client.close().await.expect("close");
        ready
    };

    // connect-to-ready: median and p99 over 200 sessions.
    let samples: Vec<Duration> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..200 {
            v.push(connect_once(host.clone()).await);
        }
        v
    });
    let (median, p99) = median_and_p99(samples);
    println!("connect-to-ready: median {median:?}, p99 {p99:?} (200 sessions)");
    c.bench_function("connect_to_ready_and_close", |b| {
        b.to_async(&rt).iter(|| connect_once(host.clone()));
    });

    // Cached {version} over h2c: engine (live session) vs bare hyper h2c server.
    let (client, metadata) = rt.block_on(async {
        let opts = opts(host.clone());
        let client = dagr_client::connect(opts).await.expect("connect");
        let md = client.metadata().encode();
        (client, md)
    });
    let (mut engine_conn, mut bare_conn) = rt.block_on(async {
        let engine_answer = round_trip(&mut h2c::connect(engine.tcp).await, Some(&metadata)).await;
        let bare = bare_server(engine_answer);
        (h2c::connect(engine.tcp).await, h2c::connect(bare).await)
    });
    let measure = |conn: &mut H2, md: Option<&str>| {
        rt.block_on(async {
            let mut v = Vec::with_capacity(2000);
            for _ in 0..2000 {
                let t = Instant::now();
                round_trip(conn, md).await;
                v.push(t.elapsed());
            }
            median_and_p99(v).0
        })
    };
    let bare_median = measure(&mut bare_conn, None);
    let engine_median = measure(&mut engine_conn, Some(&metadata));
    println!(
        "query {{version}} over h2c: engine median {engine_median:?}, bare hyper h2c median {bare_median:?}, \
         ratio {:.2}x (goal <= 1.5x)",
        engine_median.as_secs_f64() / bare_median.as_secs_f64()
    );
    let mut group = c.benchmark_group("query_version_h2c");
    group.bench_function("engine", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = engine_conn.clone();
            let md = metadata.clone();
            async move { round_trip(&mut conn, Some(&md)).await }
        });
    });
    group.bench_function("bare_hyper", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = bare_conn.clone();
            async move { round_trip(&mut conn, None).await }
        });
    });
    group.finish();
    rt.block_on(async { client.close().await.expect("close") });
}

criterion_group! {
    name = api;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(api);

fn opts(host: dagr_client::EngineHost) -> dagr_client::ConnectOptions {
    dagr_testkit::connect_options(&host.to_string(), &std::env::temp_dir())
}
