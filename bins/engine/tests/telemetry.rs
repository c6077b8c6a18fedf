//! Telemetry end to end: a client subscribes to its trace (`TracesSource` / `LogsSource` on the
//! engine's listener) and receives the spans of its calls and of the steps they ran, with their
//! parent links, `cached` marks, exit codes and live, scrubbed output, all of it before `close`
//! returns.

use std::collections::HashMap;
use std::path::Path;

use dagr_client::{TelemetryEvent, TelemetryFeed};
use dagr_telemetry::attr;
use dagr_telemetry::proto::common::v1::{KeyValue, any_value::Value as AnyValue};
use dagr_telemetry::proto::logs::v1::LogRecord;
use dagr_telemetry::proto::trace::v1::Span;
use serde_json::{Value, json};

fn engine() -> dagr_testkit::EngineProcess {
    dagr_testkit::EngineProcess::start(Path::new(env!("CARGO_BIN_EXE_dagr-engine")), &[])
}

async fn connect(engine: &dagr_testkit::EngineProcess) -> dagr_client::Client {
    dagr_client::connect(dagr_testkit::connect_options(
        &engine.host(),
        &std::env::temp_dir(),
    ))
    .await
    .expect("connect")
}

fn unique() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

/// What a feed delivered: the last record of each span (by span id) and every log record.
#[derive(Default)]
struct Seen {
    spans: HashMap<Vec<u8>, Span>,
    /// Span records in arrival order (starts and ends).
    records: Vec<Span>,
    logs: Vec<LogRecord>,
    failures: Vec<String>,
}

impl Seen {
    fn add(&mut self, event: TelemetryEvent) {
        match event {
            TelemetryEvent::Spans(data) => {
                for span in data
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                {
                    self.records.push(span.clone());
                    self.spans.insert(span.span_id.clone(), span);
                }
            }
            TelemetryEvent::Logs(data) => self.logs.extend(
                data.resource_logs
                    .into_iter()
                    .flat_map(|r| r.scope_logs)
                    .flat_map(|s| s.log_records),
            ),
            TelemetryEvent::Failed(message) => self.failures.push(message),
        }
    }

    /// Reads the feed until it closes (the session ended and everything was delivered).
    async fn drain(mut feed: TelemetryFeed) -> Seen {
        let mut seen = Seen::default();
        while let Some(event) = feed.events.recv().await {
            seen.add(event);
        }
        assert!(seen.failures.is_empty(), "{:?}", seen.failures);
        seen
    }

    fn named(&self, name: &str) -> Vec<&Span> {
        let mut spans: Vec<&Span> = self.spans.values().filter(|s| s.name == name).collect();
        spans.sort_by_key(|s| s.start_time_unix_nano);
        spans
    }

    fn lines_of(&self, span: &Span) -> Vec<String> {
        self.logs
            .iter()
            .filter(|l| l.span_id == span.span_id && !is_eof(l))
            .map(|l| body(l).to_owned())
            .collect()
    }
}

fn attr_value(attrs: &[KeyValue], key: &str) -> Option<AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
}

fn body(log: &LogRecord) -> &str {
    match log.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s,
        _ => "",
    }
}

fn is_eof(log: &LogRecord) -> bool {
    attr_value(&log.attributes, attr::STDIO_EOF) == Some(AnyValue::BoolValue(true))
}

fn three_execs(image: &str, tag: &str) -> Value {
    let exec = |word: &str| json!(["sh", "-c", format!("echo {word}-{tag}")]);
    json!({
        "query": format!(
            "{{ container {{ from(address: {}) {{ withExec(args: {}) {{ withExec(args: {}) {{ withExec(args: {}) {{ stdout }} }} }} }} }} }}",
            json!(image),
            exec("one"),
            exec("two"),
            exec("three")
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_reports_its_calls_steps_and_logs_and_the_second_run_is_cached() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = engine();
    let mut client = connect(&engine).await;
    let feed = client.subscribe().await.expect("subscribe");
    let root = client.traceparent();
    let tag = unique();
    for run in ["cold", "cached"] {
        let v = client
            .query(three_execs(&registry.image, &tag))
            .await
            .expect("query");
        assert!(v.get("errors").is_none(), "{run}: {v}");
    }
    client.close().await.expect("close");
    let seen = Seen::drain(feed).await;

    // The calls that did work, under the client's span; each run's steps under its call.
    let stdout_calls = seen.named("Container.stdout");
    assert_eq!(stdout_calls.len(), 2, "one per query");
    for call in &stdout_calls {
        assert_eq!(call.parent_span_id, root.span_id.to_bytes().to_vec());
        assert_eq!(call.trace_id, root.trace_id.to_bytes().to_vec());
        assert_ne!(call.end_time_unix_nano, 0, "ended");
    }
    assert!(!seen.named("Container.from").is_empty());
    let (cold, cached) = (stdout_calls[0], stdout_calls[1]);
    for word in ["one", "two", "three"] {
        let name = format!("exec sh -c echo {word}-{tag}");
        let steps = seen.named(&name);
        let ran = steps
            .iter()
            .find(|s| attr_value(&s.attributes, attr::CACHED) == Some(AnyValue::BoolValue(false)))
            .unwrap_or_else(|| panic!("{name} ran: {steps:?}"));
        assert_eq!(
            ran.parent_span_id, cold.span_id,
            "{name} under the first stdout"
        );
        assert_eq!(
            attr_value(&ran.attributes, attr::EXIT_CODE),
            Some(AnyValue::IntValue(0))
        );
        assert_eq!(
            seen.lines_of(ran),
            [format!("{word}-{tag}\n")],
            "{name}'s log"
        );
        assert!(
            seen.logs
                .iter()
                .any(|l| l.span_id == ran.span_id && is_eof(l)),
            "{name}'s output ends with an end-of-stream record"
        );
    }
    // The second run is answered by the cache: its last step is one span marked cached.
    let last = seen.named(&format!("exec sh -c echo three-{tag}"));
    let hit = last
        .iter()
        .find(|s| attr_value(&s.attributes, attr::CACHED) == Some(AnyValue::BoolValue(true)))
        .expect("a cached span on the second run");
    assert_eq!(hit.parent_span_id, cached.span_id);
    // Every span's last record is its end.
    for span in seen.spans.values() {
        assert_ne!(span.end_time_unix_nano, 0, "{} ended", span.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_reaches_the_subscriber_while_the_exec_still_runs() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = engine();
    let mut client = connect(&engine).await;
    let mut feed = client.subscribe().await.expect("subscribe");
    let tag = unique();
    let query = json!({
        "query": format!(
            "{{ container {{ from(address: {}) {{ withExec(args: {}) {{ stdout }} }} }} }}",
            json!(registry.image),
            json!(["sh", "-c", format!("echo early-{tag}; sleep 3; echo late-{tag}")])
        )
    });
    let client = std::sync::Arc::new(client);
    let running = {
        let client = client.clone();
        tokio::spawn(async move { client.query(query).await })
    };
    let mut seen = Seen::default();
    let early = format!("early-{tag}\n");
    while !seen.logs.iter().any(|l| body(l) == early) {
        let event = feed.events.recv().await.expect("the feed is open");
        seen.add(event);
    }
    assert!(
        !running.is_finished(),
        "the first line arrived while the exec was still running"
    );
    let v = running.await.expect("task").expect("query");
    assert!(v.get("errors").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_scrubbed_from_logs_like_from_stdout() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = engine();
    let mut client = connect(&engine).await;
    let feed = client.subscribe().await.expect("subscribe");
    let plaintext = format!("hunter2-{}", unique());
    let v = client
        .query(json!({ "query": format!("{{ setSecret(name: \"tok\", plaintext: {}) {{ id }} }}", json!(plaintext)) }))
        .await
        .expect("setSecret");
    let id = v["data"]["setSecret"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let v = client
        .query(json!({
            "query": format!(
                "{{ container {{ from(address: {}) {{ withSecretVariable(name: \"TOK\", secret: {}) {{ withExec(args: [\"sh\", \"-c\", \"echo token=$TOK\"]) {{ stdout }} }} }} }} }}",
                json!(registry.image),
                json!(id)
            )
        }))
        .await
        .expect("query");
    assert_eq!(
        v["data"]["container"]["from"]["withSecretVariable"]["withExec"]["stdout"],
        "token=***\n"
    );
    client.close().await.expect("close");
    let seen = Seen::drain(feed).await;
    assert!(seen.logs.iter().any(|l| body(l) == "token=***\n"));
    let leaked = seen.logs.iter().any(|l| body(l).contains(&plaintext))
        || seen
            .spans
            .values()
            .any(|s| s.name.contains(&plaintext) || format!("{s:?}").contains(&plaintext));
    assert!(!leaked, "the plaintext never leaves the engine");
}

/// 200 sessions whose last act is an `echo`: every line reaches its subscriber before `close`
/// returns, with no sleep anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_delivers_every_last_line_of_200_sessions() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = std::sync::Arc::new(engine());
    let tag = unique();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut sessions = Vec::new();
    for i in 0..200 {
        let (engine, limit, image, tag) = (
            engine.clone(),
            limit.clone(),
            registry.image.clone(),
            tag.clone(),
        );
        sessions.push(tokio::spawn(async move {
            let _slot = limit.acquire().await.expect("semaphore");
            let mut client = connect(&engine).await;
            let feed = client.subscribe().await.expect("subscribe");
            let line = format!("last-{i}-{tag}");
            let v = client
                .query(json!({
                    "query": format!(
                        "{{ container {{ from(address: {}) {{ withExec(args: [\"echo\", {}]) {{ stdout }} }} }} }}",
                        json!(image),
                        json!(line)
                    )
                }))
                .await
                .expect("query");
            assert!(v.get("errors").is_none(), "{v}");
            client.close().await.expect("close");
            let seen = Seen::drain(feed).await;
            let want = format!("{line}\n");
            seen.logs.iter().filter(|l| body(l) == want).count()
        }));
    }
    let mut lost = 0;
    for session in sessions {
        let delivered = session.await.expect("session task");
        if delivered != 1 {
            lost += 1;
        }
    }
    assert_eq!(
        lost, 0,
        "sessions whose last line did not arrive exactly once"
    );
}

/// A subscriber that goes away mid-stream holds nothing up: the session still closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_subscriber_does_not_hold_up_the_close() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = engine();
    let mut client = connect(&engine).await;
    let feed = client.subscribe().await.expect("subscribe");
    drop(feed);
    let v = client
        .query(json!({
            "query": format!(
                "{{ container {{ from(address: {}) {{ withExec(args: [\"echo\", {}]) {{ stdout }} }} }} }}",
                json!(registry.image),
                json!(unique())
            )
        }))
        .await
        .expect("query");
    assert!(v.get("errors").is_none(), "{v}");
    tokio::time::timeout(std::time::Duration::from_secs(30), client.close())
        .await
        .expect("close returns")
        .expect("close");
    engine.wait_metric("dagr_sessions_active", 0);
}

/// A nested exec continues the trace (TRACEPARENT) and exports its own spans to its listener
/// (OTLP/HTTP with OTLP's JSON encoding, no token needed): they reach the subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_exec_exports_its_spans_into_the_trace() {
    use dagr_telemetry::proto::collector::trace::v1::ExportTraceServiceRequest;
    use dagr_telemetry::proto::trace::v1::{ResourceSpans, ScopeSpans};

    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = engine();
    let mut client = connect(&engine).await;
    let feed = client.subscribe().await.expect("subscribe");
    let root = client.traceparent();
    let tag = unique();
    let exported = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: root.trace_id.to_bytes().to_vec(),
                    span_id: dagr_telemetry::new_span_id().to_bytes().to_vec(),
                    parent_span_id: root.span_id.to_bytes().to_vec(),
                    name: format!("inside-{tag}"),
                    start_time_unix_nano: 1,
                    end_time_unix_nano: 2,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    // busybox wget posts text only: OTLP's JSON encoding (hex ids) is text.
    let body = serde_json::to_string(&exported).expect("OTLP JSON");
    let script = "wget -q -O /dev/null --header 'Content-Type: application/json' \
           --post-file /span.json http://127.0.0.1:$DAGGER_SESSION_PORT/v1/traces \
        && echo \"posted $TRACEPARENT $OTEL_EXPORTER_OTLP_ENDPOINT $DAGGER_SESSION_PORT\"";
    let query = format!(
        "{{ container {{ from(address: {}) {{ withNewFile(path: \"/span.json\", contents: {}) {{ withExec(args: {}, experimentalPrivilegedNesting: true) {{ stdout }} }} }} }} }}",
        json!(registry.image),
        json!(body),
        json!(["sh", "-c", script])
    );
    let v = client
        .query(json!({ "query": query }))
        .await
        .expect("query");
    let stdout = v["data"]["container"]["from"]["withNewFile"]["withExec"]["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("no stdout: {v}"))
        .to_owned();
    client.close().await.expect("close");
    let seen = Seen::drain(feed).await;

    let words: Vec<&str> = stdout.split_whitespace().collect();
    let ["posted", traceparent, endpoint, port] = words[..] else {
        panic!("unexpected output: {stdout:?}");
    };
    assert_eq!(endpoint, format!("http://127.0.0.1:{port}"));
    let exec_parent: dagr_telemetry::TraceParent = traceparent.parse().expect("TRACEPARENT");
    assert_eq!(
        exec_parent.trace_id, root.trace_id,
        "the exec continues the trace"
    );
    let exec = seen
        .spans
        .values()
        .find(|s| s.span_id == exec_parent.span_id.to_bytes().to_vec())
        .expect("TRACEPARENT names the exec's own span");
    assert!(exec.name.starts_with("exec sh -c"), "{}", exec.name);
    assert_eq!(
        seen.named(&format!("inside-{tag}")).len(),
        1,
        "the exported span reached the subscriber"
    );
}

/// A stand-in OpenTelemetry collector on 127.0.0.1: the names of the spans it was sent.
#[derive(Clone, Default)]
struct Collector {
    spans: std::sync::Arc<parking_lot::Mutex<Vec<Span>>>,
}

impl Collector {
    fn take(
        &self,
        request: dagr_telemetry::proto::collector::trace::v1::ExportTraceServiceRequest,
    ) {
        self.spans.lock().extend(
            request
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans),
        );
    }

    /// Waits (at most a minute: hang protection) until a span named `name` arrived.
    async fn wait_for(&self, name: &str) -> Span {
        for _ in 0..600 {
            if let Some(span) = self.spans.lock().iter().find(|s| s.name == name) {
                return span.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "the collector never got {name}: {:?}",
            self.spans
                .lock()
                .iter()
                .map(|s| &s.name)
                .collect::<Vec<_>>()
        );
    }
}

#[tonic::async_trait]
impl dagr_telemetry::proto::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<
            dagr_telemetry::proto::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<dagr_telemetry::proto::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        self.take(request.into_inner());
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Serves `collector` as OTLP/gRPC (`grpc`) or OTLP/HTTP protobuf on 127.0.0.1; its URL.
async fn serve_collector(collector: Collector, grpc: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    if grpc {
        let service =
            dagr_telemetry::proto::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                collector,
            );
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
    } else {
        use futures::StreamExt as _;
        use http_body_util::BodyExt as _;
        use prost::Message as _;
        tokio::spawn(async move {
            let mut incoming = incoming;
            while let Some(Ok(stream)) = incoming.next().await {
                let collector = collector.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let collector = collector.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let body = req.into_body().collect().await?.to_bytes();
                                if path == "/v1/traces" {
                                    collector.take(
                                    dagr_telemetry::proto::collector::trace::v1::ExportTraceServiceRequest::decode(body)
                                        .expect("protobuf export"),
                                );
                                }
                                Ok::<_, hyper::Error>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::new()),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_exports_finished_spans_to_a_collector_over_grpc_and_http() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    for (grpc, protocol) in [(true, "grpc"), (false, "http/protobuf")] {
        let collector = Collector::default();
        let url = serve_collector(collector.clone(), grpc).await;
        let engine = dagr_testkit::EngineProcess::start(
            Path::new(env!("CARGO_BIN_EXE_dagr-engine")),
            &["--otlp-endpoint", &url, "--otlp-protocol", protocol],
        );
        let client = connect(&engine).await;
        let tag = unique();
        let v = client
            .query(json!({
                "query": format!(
                    "{{ container {{ from(address: {}) {{ withExec(args: [\"echo\", {}]) {{ stdout }} }} }} }}",
                    json!(registry.image),
                    json!(tag)
                )
            }))
            .await
            .expect("query");
        assert!(v.get("errors").is_none(), "{v}");
        let root = client.traceparent();
        client.close().await.expect("close");
        let exec = collector.wait_for(&format!("exec echo {tag}")).await;
        assert_eq!(
            exec.trace_id,
            root.trace_id.to_bytes().to_vec(),
            "{protocol}"
        );
        assert_ne!(
            exec.end_time_unix_nano, 0,
            "{protocol}: only finished spans"
        );
        let call = collector.wait_for("Container.stdout").await;
        assert_eq!(exec.parent_span_id, call.span_id, "{protocol}");
        assert!(
            collector
                .spans
                .lock()
                .iter()
                .all(|s| s.end_time_unix_nano != 0),
            "{protocol}: no live starts are exported"
        );
    }
}

/// Two clients in one trace (the second continues the first's span, as a CLI started by a
/// pipeline would): each subscriber receives all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_of_a_trace_receives_all_of_it() {
    let registry = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"));
    let engine = engine();
    let mut first = connect(&engine).await;
    let first_feed = first.subscribe().await.expect("subscribe");
    let mut opts = dagr_testkit::connect_options(&engine.host(), &std::env::temp_dir());
    opts.traceparent = Some(first.traceparent());
    let mut second = dagr_client::connect(opts).await.expect("connect");
    let second_feed = second.subscribe().await.expect("subscribe");
    let tag = unique();
    for (client, word) in [(&first, "first"), (&second, "second")] {
        let v = client
            .query(json!({
                "query": format!(
                    "{{ container {{ from(address: {}) {{ withExec(args: [\"echo\", {}]) {{ stdout }} }} }} }}",
                    json!(registry.image),
                    json!(format!("{word}-{tag}"))
                )
            }))
            .await
            .expect("query");
        assert!(v.get("errors").is_none(), "{v}");
    }
    second.close().await.expect("close");
    first.close().await.expect("close");
    for (feed, who) in [(first_feed, "first"), (second_feed, "second")] {
        let seen = Seen::drain(feed).await;
        for word in ["first", "second"] {
            let step = seen.named(&format!("exec echo {word}-{tag}"));
            assert_eq!(
                step.len(),
                1,
                "{who} subscriber sees the {word} client's exec"
            );
            assert_eq!(seen.lines_of(step[0]), [format!("{word}-{tag}\n")]);
        }
    }
}
