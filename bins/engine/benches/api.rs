//! Engine API benchmarks, each against a baseline measured in the same run:
//! - `connect`: `dagr_client::connect` to ready (attachables included) then close; median and p99.
//! - `query_version`: a `{version}` round trip over h2c on a live session vs a bare hyper h2c server in
//!   this process answering the same bytes; prints the ratio (goal: within 1.5x).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use dagr_metadata::CLIENT_METADATA_HEADER;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

struct EngineProcess {
    child: Child,
    tcp: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn start_engine() -> EngineProcess {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dagr-engine"))
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg("tcp://127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn engine");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines.next().expect("listener line").expect("line");
    let tcp = line
        .strip_prefix("dagr-engine listening on tcp://")
        .expect("tcp line")
        .parse()
        .expect("addr");
    std::thread::spawn(move || for _ in lines {});
    EngineProcess {
        child,
        tcp,
        _dir: dir,
    }
}

const VERSION_BODY: &str = r#"{"query":"{version}"}"#;

/// A bare hyper h2c server answering every request with `answer`: the floor for a round trip. It
/// runs on its own runtime thread, as the engine runs in its own process, so both pay the same
/// cross-thread wake-ups.
fn bare_server(answer: Bytes) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("bare server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let answer = answer.clone();
                            async move {
                                let _ = req.into_body().collect().await;
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(answer)))
                            }
                        });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    rx.recv().expect("bare server address")
}

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2(addr: SocketAddr) -> H2 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

async fn round_trip(send: &mut H2, metadata: Option<&str>) -> Bytes {
    let mut b = Request::post("http://dagger/query");
    if let Some(m) = metadata {
        b = b.header(CLIENT_METADATA_HEADER, m);
    }
    let req = b
        .body(Full::new(Bytes::from_static(VERSION_BODY.as_bytes())))
        .expect("request");
    let resp = send.send_request(req).await.expect("round trip");
    resp.into_body().collect().await.expect("body").to_bytes()
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
    let engine = start_engine();
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
        let engine_answer = round_trip(&mut h2(engine.tcp).await, Some(&metadata)).await;
        let bare = bare_server(engine_answer);
        (h2(engine.tcp).await, h2(bare).await)
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
    dagr_client::ConnectOptions {
        host,
        session_id: None,
        client_id: None,
        token: None,
        workdir: std::env::temp_dir(),
        labels: Default::default(),
        hostname: "test".into(),
        attach: true,
        allow_send: false,
    }
}
