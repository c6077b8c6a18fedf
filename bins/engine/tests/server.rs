//! The engine binary driven over real sockets: HTTP/1.1 and h2c on one listener, gRPC health and
//! Info on the same port, every refusal path, session lifecycle, metrics, connection reuse and
//! resource stability over many sessions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use dagr_metadata::{CLIENT_METADATA_HEADER, ClientMetadata};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Engine = dagr_testkit::EngineProcess;

fn start() -> Engine {
    Engine::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[])
}

/// SIGTERM and wait: the graceful path.
fn terminate(engine: &mut Engine) -> std::process::ExitStatus {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(engine.child.id() as i32, libc::SIGTERM) };
    engine.child.wait().expect("wait")
}

fn md(session: &str, client: &str, token: &str) -> ClientMetadata {
    ClientMetadata {
        client_id: client.into(),
        client_secret_token: token.into(),
        session_id: session.into(),
        client_hostname: "test".into(),
        client_version: "0.1.0".into(),
        labels: BTreeMap::new(),
        ..Default::default()
    }
}

fn query_request(meta: Option<String>, query: &str) -> Request<Full<Bytes>> {
    let mut b = Request::post("http://dagger/query").header("content-type", "application/json");
    if let Some(m) = meta {
        b = b.header(CLIENT_METADATA_HEADER, m);
    }
    b.body(Full::new(Bytes::from(
        serde_json::json!({ "query": query }).to_string(),
    )))
    .expect("request")
}

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h1(addr: SocketAddr) -> H1 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    send
}

async fn h2(addr: SocketAddr) -> H2 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

async fn body_json(resp: http::Response<hyper::body::Incoming>) -> (StatusCode, serde_json::Value) {
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("json body"))
}

async fn metrics(addr: SocketAddr) -> String {
    let mut c = h1(addr).await;
    let resp = c
        .send_request(
            Request::get("http://dagger/metrics")
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("metrics");
    assert_eq!(resp.status(), StatusCode::OK);
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf8")
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
}

/// Polls a metric until it equals `want` (hang protection only: 30 s).
async fn wait_metric(addr: SocketAddr, name: &str, want: u64) {
    for _ in 0..600 {
        if metric(&metrics(addr).await, name) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {want}:\n{}", metrics(addr).await);
}

#[tokio::test]
async fn http1_and_h2c_queries_on_one_listener() {
    let engine = start();
    let mut c1 = h1(engine.tcp).await;
    let resp = c1
        .send_request(query_request(
            Some(md("s1", "c1", "t").encode()),
            "{ version }",
        ))
        .await
        .expect("h1 query");
    let (status, json) = body_json(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["data"]["version"], env!("CARGO_PKG_VERSION"));

    let mut c2 = h2(engine.tcp).await;
    let resp = c2
        .send_request(query_request(
            Some(md("s2", "c2", "t").encode()),
            "query { __typename v: version ok: checkVersionCompatibility(version: \"0.11.8\") }",
        ))
        .await
        .expect("h2 query");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (status, json) = body_json(resp).await;
    assert_eq!(status, StatusCode::OK);
    // Response keys keep the order of the query.
    let keys: Vec<&String> = json["data"].as_object().expect("data").keys().collect();
    assert_eq!(keys, ["__typename", "v", "ok"]);
    assert_eq!(json["data"]["ok"], true);

    let resp = c2
        .send_request(query_request(
            Some(md("s3", "c3", "t").encode()),
            "{ checkVersionCompatibility(version: \"0.0.1\") }",
        ))
        .await
        .expect("h2 query");
    let (_, json) = body_json(resp).await;
    let msg = json["errors"][0]["message"].as_str().expect("error");
    assert!(msg.contains("incompatible client version"), "{msg}");

    // The unix socket serves the same stack.
    let stream = tokio::net::UnixStream::connect(&engine.unix)
        .await
        .expect("unix connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 over unix");
    tokio::spawn(conn);
    let resp = send
        .send_request(query_request(
            Some(md("s4", "c4", "t").encode()),
            "{ version }",
        ))
        .await
        .expect("unix query");
    let (status, json) = body_json(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["data"]["version"], env!("CARGO_PKG_VERSION"));
    let mode = std::fs::metadata(&engine.unix)
        .expect("socket")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o660
    );
}

#[tokio::test]
async fn grpc_health_and_info_on_the_same_port() {
    let engine = start();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", engine.tcp))
        .expect("endpoint")
        .connect()
        .await
        .expect("grpc connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check");
    assert_eq!(
        resp.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let text = metrics(engine.tcp).await;
    assert!(
        text.contains("dagr_http_requests_total{route=\"grpc\",status=\"200\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn refusals_name_the_problem() {
    let engine = start();
    let mut c = h2(engine.tcp).await;
    let garbled = "bm90IGpzb24=".to_owned(); // base64 of "not json"
    let mut empty_client = md("s", "", "t");
    empty_client.client_id.clear();
    let mut old = md("s-old", "c", "t");
    old.client_version = "0.0.1".into();
    let cases: Vec<(Option<String>, StatusCode, &str)> = vec![
        (
            None,
            StatusCode::BAD_REQUEST,
            "missing x-dagger-client-metadata",
        ),
        (
            Some("***".into()),
            StatusCode::BAD_REQUEST,
            "not valid base64",
        ),
        (
            Some(garbled),
            StatusCode::BAD_REQUEST,
            "not a valid JSON object",
        ),
        (
            Some(empty_client.encode()),
            StatusCode::BAD_REQUEST,
            "empty client_id",
        ),
        (
            Some(md("", "c", "t").encode()),
            StatusCode::BAD_REQUEST,
            "empty session_id",
        ),
        (
            Some(md("s", "c", "").encode()),
            StatusCode::BAD_REQUEST,
            "empty client_secret_token",
        ),
        (
            Some(old.encode()),
            StatusCode::BAD_REQUEST,
            "incompatible client version",
        ),
    ];
    for (header, status, needle) in cases {
        let resp = c
            .send_request(query_request(header, "{version}"))
            .await
            .expect("send");
        let (got, json) = body_json(resp).await;
        let msg = json["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(got, status, "{needle}: {msg}");
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }

    // Wrong token for a client whose token is fixed: keep the session alive with a connected client.
    let client = dagr_client::connect(opts(format!("tcp://{}", engine.tcp).parse().expect("host")))
        .await
        .expect("connect");
    let mut stolen = client.metadata().clone();
    stolen.client_secret_token = "not-the-token".into();
    let resp = c
        .send_request(query_request(Some(stolen.encode()), "{version}"))
        .await
        .expect("send");
    let (status, json) = body_json(resp).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        json["errors"][0]["message"]
            .as_str()
            .expect("msg")
            .contains("different secret token")
    );

    // A second attachables connection for the same client id.
    let stream = tokio::net::TcpStream::connect(engine.tcp)
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1");
    tokio::spawn(conn.with_upgrades());
    let req = Request::get("http://dagger/sessionAttachables")
        .header(CLIENT_METADATA_HEADER, client.metadata().encode())
        .header("connection", "Upgrade")
        .header("upgrade", dagr_metadata::ATTACHABLES_UPGRADE_TOKEN)
        .header(
            dagr_metadata::EXPOSE_METHOD_HEADER,
            "/grpc.health.v1.Health/Check",
        )
        .body(Full::new(Bytes::new()))
        .expect("req");
    let resp = send.send_request(req).await.expect("send");
    let (status, json) = body_json(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json["errors"][0]["message"]
            .as_str()
            .expect("msg")
            .contains("already has an attachables connection")
    );

    // Unknown route.
    let resp = c
        .send_request(
            Request::get("http://dagger/nope")
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    client.close().await.expect("close");
}

#[tokio::test]
async fn session_lifecycle_join_teardown_and_removed() {
    let engine = start();
    let host: dagr_client::EngineHost = format!("tcp://{}", engine.tcp).parse().expect("host");
    let opts = opts(host.clone());
    let main = dagr_client::connect(opts).await.expect("connect");
    let session_id = main.metadata().session_id.clone();
    assert_eq!(
        metric(&metrics(engine.tcp).await, "dagr_sessions_active"),
        1
    );

    // A second client joins the same session and does not end it when it leaves.
    let mut c = h2(engine.tcp).await;
    let resp = c
        .send_request(query_request(
            Some(md(&session_id, "joiner", "j").encode()),
            "{version}",
        ))
        .await
        .expect("join");
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = resp.into_body().collect().await;
    let text = metrics(engine.tcp).await;
    assert_eq!(metric(&text, "dagr_clients_active"), 2);
    assert_eq!(metric(&text, "dagr_sessions_active"), 1);

    let v = main
        .query(serde_json::json!({"query": "{version}"}))
        .await
        .expect("query");
    assert_eq!(v["data"]["version"], env!("CARGO_PKG_VERSION"));

    main.close().await.expect("close");
    wait_metric(engine.tcp, "dagr_sessions_active", 0).await;
    assert_eq!(metric(&metrics(engine.tcp).await, "dagr_clients_active"), 0);

    // The session is removed: late requests naming it get a clear error.
    let resp = c
        .send_request(query_request(
            Some(md(&session_id, "joiner", "j").encode()),
            "{version}",
        ))
        .await
        .expect("late");
    let (status, json) = body_json(resp).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(
        json["errors"][0]["message"],
        format!("session {session_id} was removed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_queries_share_one_connection() {
    let engine = start();
    let before = metric(
        &metrics(engine.tcp).await,
        "dagr_connections_accepted_total",
    );
    let opts = opts(format!("tcp://{}", engine.tcp).parse().expect("host"));
    let client = std::sync::Arc::new(dagr_client::connect(opts).await.expect("connect"));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let v = client
                .query(serde_json::json!({"query": format!("{{ a{i}: version }}")}))
                .await
                .expect("query");
            assert_eq!(v["data"][format!("a{i}")], env!("CARGO_PKG_VERSION"));
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // One metrics connection was counted in `before`; the client used at most two connections.
    let after = metric(
        &metrics(engine.tcp).await,
        "dagr_connections_accepted_total",
    );
    // `after` includes this metrics connection itself.
    assert!(
        after - before - 1 <= 2,
        "client used {} connections",
        after - before - 1
    );
    let client = std::sync::Arc::into_inner(client).expect("sole owner");
    client.close().await.expect("close");
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_close_cycles_leak_nothing() {
    let engine = start();
    let host: dagr_client::EngineHost = format!("tcp://{}", engine.tcp).parse().expect("host");
    let cycle = |host: dagr_client::EngineHost| async move {
        let opts = opts(host);
        let c = dagr_client::connect(opts).await.expect("connect");
        c.query(serde_json::json!({"query": "{version}"}))
            .await
            .expect("query");
        c.close().await.expect("close");
    };
    // Warm up allocator pools and lazily created runtime threads.
    for _ in 0..50 {
        cycle(host.clone()).await;
    }
    wait_metric(engine.tcp, "dagr_sessions_active", 0).await;
    wait_metric(engine.tcp, "dagr_connections_open", 1).await;
    let fds = fd_count(engine.child.id());
    let tasks = metric(&metrics(engine.tcp).await, "dagr_runtime_alive_tasks");
    let rss = rss_kib(engine.child.id());
    for _ in 0..500 {
        cycle(host.clone()).await;
    }
    wait_metric(engine.tcp, "dagr_sessions_active", 0).await;
    wait_metric(engine.tcp, "dagr_connections_open", 1).await;
    let text = metrics(engine.tcp).await;
    assert_eq!(metric(&text, "dagr_clients_active"), 0);
    assert_eq!(metric(&text, "dagr_sessions_removed_total"), 550);
    let fds_after = fd_count(engine.child.id());
    assert!(fds_after <= fds + 2, "fds grew from {fds} to {fds_after}");
    let tasks_after = metric(&text, "dagr_runtime_alive_tasks");
    assert!(
        tasks_after <= tasks + 2,
        "tasks grew from {tasks} to {tasks_after}"
    );
    let rss_after = rss_kib(engine.child.id());
    // Bounded growth: a leak of even 4 KiB per session would add 2 MiB.
    assert!(
        rss_after <= rss + 2048,
        "rss grew from {rss} KiB to {rss_after} KiB"
    );
}

#[tokio::test]
async fn sigterm_ends_sessions_and_exits_zero() {
    let mut engine = start();
    let opts = opts(format!("tcp://{}", engine.tcp).parse().expect("host"));
    let _client = dagr_client::connect(opts).await.expect("connect");
    let unix = engine.unix.clone();
    let status = tokio::task::spawn_blocking(move || terminate(&mut engine))
        .await
        .expect("join");
    assert!(status.success(), "engine exited with {status}");
    assert!(!Path::new(&unix).exists(), "socket file removed");
}

fn opts(host: dagr_client::EngineHost) -> dagr_client::ConnectOptions {
    dagr_testkit::connect_options(&host.to_string(), &std::env::temp_dir())
}

#[tokio::test]
async fn immediate_shutdown_ends_the_session_and_closes_its_attachables() {
    let engine = start();
    let client = dagr_client::connect(opts(format!("tcp://{}", engine.tcp).parse().expect("host")))
        .await
        .expect("connect");
    assert_eq!(
        metric(&metrics(engine.tcp).await, "dagr_sessions_active"),
        1
    );
    let resp = client
        .request(
            Request::post("/shutdown?immediate=true")
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("shutdown");
    assert_eq!(resp.status(), StatusCode::OK);
    // Gone while the client still holds its attachables connection: the engine closed it.
    wait_metric(engine.tcp, "dagr_sessions_active", 0).await;
    let late = client
        .query(serde_json::json!({"query": "{version}"}))
        .await;
    let err = late.expect_err("the session was removed").to_string();
    assert!(err.contains("was removed"), "{err}");
    // Closing afterwards does not hang.
    let _ = tokio::time::timeout(Duration::from_secs(30), client.close())
        .await
        .expect("close returns");
}

/// The cache is collected when a session ends (what it held may go then), not only on the
/// periodic timer (set to an hour here: after its first pass at start, only session ends run
/// it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_runs_after_each_session_end() {
    let engine = dagr_testkit::EngineProcess::start(
        Path::new(env!("CARGO_BIN_EXE_dagr-engine")),
        &["--gc-interval", "3600"],
    );
    let wait = |want: u64| {
        let engine = &engine;
        move || engine.wait_metric("dagr_gc_runs_total", want)
    };
    wait(1)();
    for n in 2..=3 {
        let client = dagr_client::connect(dagr_testkit::connect_options(
            &engine.host(),
            &std::env::temp_dir(),
        ))
        .await
        .expect("connect");
        client.close().await.expect("close");
        tokio::task::block_in_place(wait(n));
    }
}

/// A fork bomb fails its own exec with a clear error at `--exec-pids-limit`; the engine and
/// the next exec carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_fails_its_exec_at_the_pids_limit_and_the_engine_carries_on() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = dagr_testkit::EngineProcess::start(
        Path::new(env!("CARGO_BIN_EXE_dagr-engine")),
        &["--exec-pids-limit", "64"],
    );
    let client = dagr_client::connect(dagr_testkit::connect_options(
        &engine.host(),
        &std::env::temp_dir(),
    ))
    .await
    .expect("connect");
    let exec = |script: &str| {
        serde_json::json!({
            "query": format!(
                "{{ container {{ from(address: {}) {{ withExec(args: {}) {{ stdout }} }} }} }}",
                serde_json::json!(registry.image),
                serde_json::json!(["sh", "-c", script])
            )
        })
    };
    let bomb = client
        .query(exec(&format!(
            "echo {}; while :; do sleep 30 & done",
            std::process::id()
        )))
        .await
        .expect("query");
    let message = bomb["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("pids limit reached (64 processes)"),
        "{bomb}"
    );
    assert_eq!(bomb["errors"][0]["extensions"]["_type"], "EXEC_ERROR");
    let after = client.query(exec("echo still here")).await.expect("query");
    assert_eq!(
        after["data"]["container"]["from"]["withExec"]["stdout"],
        "still here\n"
    );
    client.close().await.expect("close");
}
