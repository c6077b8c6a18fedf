//! Telemetry's cost and speed, each against a baseline measured in the same run:
//! - overhead: the fully cached 5-step pipeline re-queried with one subscriber following the
//!   trace, vs an engine started with `--no-telemetry` (goal: <= 1.10x);
//! - log latency: an exec printing a line every 10 ms; for each line, from the engine reading
//!   it off the exec's pipe (the record's time) to the subscriber receiving it (goal: p50 < 5 ms);
//! - throughput: 100 MiB of exec output (1000-byte lines) through the stream to the subscriber,
//!   vs the same exec writing to /dev/null inside the container (goal: >= 100 MiB/s).
//!
//! Needs root, runc, docker-registry and skopeo (`cargo xtask bench` installs them).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dagr_client::{Client, TelemetryEvent, TelemetryFeed};
use dagr_telemetry::attr;
use dagr_telemetry::proto::common::v1::any_value::Value;
use serde_json::json;

fn engine(args: &[&str]) -> dagr_testkit::EngineProcess {
    dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), args)
}

async fn connect(engine: &dagr_testkit::EngineProcess) -> Client {
    dagr_client::connect(dagr_testkit::connect_options(
        &engine.host(),
        &std::env::temp_dir(),
    ))
    .await
    .expect("connect")
}

fn exec_query(image: &str, script: &str) -> serde_json::Value {
    json!({
        "query": format!(
            "{{ container {{ from(address: {}) {{ withExec(args: {}) {{ sync }} }} }} }}",
            json!(image),
            json!(["sh", "-c", script])
        )
    })
}

fn nonce() -> String {
    format!("{:x}", rand::random::<u64>())
}

/// Reads a feed on its own task: each log record's latency (receipt minus record time), the
/// log bytes received, and when the given byte count was reached.
type FeedStats = (Vec<Duration>, u64, Option<Instant>, i64);

fn read_feed(
    mut feed: TelemetryFeed,
) -> (
    tokio::sync::watch::Receiver<FeedStats>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::watch::channel((Vec::new(), 0u64, None, 0i64));
    let task = tokio::spawn(async move {
        while let Some(event) = feed.events.recv().await {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            match event {
                TelemetryEvent::Logs(data) => {
                    tx.send_modify(|(latencies, bytes, _, dropped)| {
                        for resource in data.resource_logs {
                            if let Some(r) = &resource.resource {
                                for kv in &r.attributes {
                                    if kv.key == dagr_telemetry::DROPPED_ATTR
                                        && let Some(Value::IntValue(n)) =
                                            kv.value.as_ref().and_then(|v| v.value.clone())
                                    {
                                        *dropped += n;
                                    }
                                }
                            }
                            for log in resource.scope_logs.into_iter().flat_map(|s| s.log_records) {
                                let eof = log.attributes.iter().any(|kv| kv.key == attr::STDIO_EOF);
                                if let Some(Value::StringValue(s)) = log.body.and_then(|b| b.value)
                                {
                                    *bytes += s.len() as u64;
                                }
                                if !eof {
                                    latencies.push(Duration::from_nanos(
                                        now.saturating_sub(log.time_unix_nano),
                                    ));
                                }
                            }
                        }
                    });
                }
                TelemetryEvent::Spans(_) | TelemetryEvent::Failed(_) => {}
            }
        }
    });
    (rx, task)
}

/// The median of 2000 runs of `body` (after one warm-up).
async fn time(client: &Client, body: &serde_json::Value) -> Duration {
    client.query(body.clone()).await.expect("warm up");
    let mut v = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        client.query(body.clone()).await.expect("query");
        v.push(t.elapsed());
    }
    dagr_testkit::h2c::median(v)
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let image = registry.image.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // 1. Overhead on the cached pipeline.
        let pipeline = json!({ "query": format!(
            r#"{{ container {{ from(address: "{image}") {{ withExec(args: ["sh", "-c", "echo 1 > /1"]) {{ withExec(args: ["sh", "-c", "echo 2 > /2"]) {{ withExec(args: ["sh", "-c", "echo 3 > /3"]) {{ withExec(args: ["cat", "/1", "/2", "/3"]) {{ stdout }} }} }} }} }} }} }}"#
        )});
        let on = engine(&[]);
        let off = engine(&["--no-telemetry"]);
        let mut with = connect(&on).await;
        let feed = with.subscribe().await.expect("subscribe");
        let _reader = read_feed(feed);
        let without = connect(&off).await;
        let unwatched = connect(&on).await;
        let mut traced = Duration::MAX;
        let mut untraced = Duration::MAX;
        let mut recorded = Duration::MAX;
        for _ in 0..2 {
            traced = traced.min(time(&with, &pipeline).await);
            untraced = untraced.min(time(&without, &pipeline).await);
            recorded = recorded.min(time(&unwatched, &pipeline).await);
        }
        println!(
            "telemetry overhead, cached 5-step pipeline: with a subscriber median {traced:?}, --no-telemetry median {untraced:?}, ratio {:.2}x (goal <= 1.10x); recorded without a subscriber {recorded:?} ({:.2}x)",
            traced.as_secs_f64() / untraced.as_secs_f64(),
            recorded.as_secs_f64() / untraced.as_secs_f64()
        );
        without.close().await.expect("close");
        unwatched.close().await.expect("close");
        with.close().await.expect("close");

        // 2. Log latency.
        let mut client = connect(&on).await;
        let (feed, reader) = read_feed(client.subscribe().await.expect("subscribe"));
        let script = format!(
            "i=0; while [ $i -lt 200 ]; do echo line-$i-{}; i=$((i+1)); sleep 0.01; done",
            nonce()
        );
        let v = client
            .query(exec_query(&image, &script))
            .await
            .expect("query");
        assert!(v.get("errors").is_none(), "{v}");
        client.close().await.expect("close");
        reader.await.expect("reader");
        let (latencies, _, _, dropped) = feed.borrow().clone();
        println!(
            "log latency, engine read to subscriber ({} lines, {dropped} dropped): p50 {:?}, p99 {:?} (goal p50 < 5ms)",
            latencies.len(),
            percentile(latencies.clone(), 0.5),
            percentile(latencies, 0.99)
        );

        // 3. Throughput of 100 MiB of output: a 1 MiB file of 1000-byte lines, made by a step
        // solved first, written out 100 times.
        const BYTES: u64 = 100 << 20;
        let made = format!(
            "head -c {} /dev/zero | tr '\\0' x | fold -w 999 > /data; echo {}",
            1 << 20,
            nonce()
        );
        let with_data = |script: &str| {
            json!({
                "query": format!(
                    "{{ container {{ from(address: {}) {{ withExec(args: {}) {{ withExec(args: {}) {{ sync }} }} }} }} }}",
                    json!(image),
                    json!(["sh", "-c", made]),
                    json!(["sh", "-c", script])
                )
            })
        };
        let produce = format!("i=0; while [ $i -lt 100 ]; do cat /data; i=$((i+1)); done; echo {}", nonce());
        {
            let client = connect(&on).await;
            let v = client
                .query(with_data("true"))
                .await
                .expect("query");
            assert!(v.get("errors").is_none(), "{v}");
            client.close().await.expect("close");
        }
        let baseline = {
            let client = connect(&on).await;
            let t = Instant::now();
            let v = client
                .query(with_data(&format!("({produce}) > /dev/null")))
                .await
                .expect("query");
            assert!(v.get("errors").is_none(), "{v}");
            let elapsed = t.elapsed();
            client.close().await.expect("close");
            elapsed
        };
        let mut client = connect(&on).await;
        let (mut feed, reader) = read_feed(client.subscribe().await.expect("subscribe"));
        let t = Instant::now();
        let v = client
            .query(with_data(&produce))
            .await
            .expect("query");
        assert!(v.get("errors").is_none(), "{v}");
        // At most a minute (records the subscriber could not keep up with never arrive).
        let all = tokio::time::timeout(
            Duration::from_secs(60),
            feed.wait_for(|(_, bytes, _, _)| *bytes >= BYTES),
        )
        .await
        .ok()
        .and_then(|reached| reached.ok().map(|_| t.elapsed()));
        client.close().await.expect("close");
        reader.await.expect("reader");
        let (_, bytes, _, dropped) = feed.borrow().clone();
        match all {
            Some(elapsed) => println!(
                "log throughput, 100 MiB of exec output: through the stream {elapsed:?} ({:.0} MiB/s), to /dev/null in the container {baseline:?}; {dropped} records dropped (goal >= 100 MiB/s)",
                (BYTES as f64 / (1 << 20) as f64) / elapsed.as_secs_f64()
            ),
            None => println!(
                "log throughput: only {bytes} of {BYTES} bytes arrived ({dropped} records dropped)"
            ),
        }
    });
}
