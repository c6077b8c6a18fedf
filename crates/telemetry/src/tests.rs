use std::sync::Arc;

use crate::proto::common::v1::any_value::Value;
use crate::proto::logs::v1::LogRecord;
use crate::proto::trace::v1::Span as SpanRecord;
use crate::proto::trace::v1::status::StatusCode;
use crate::*;

fn hub(capacity: usize, backlog: usize) -> Telemetry {
    Telemetry::new(TelemetryConfig {
        subscriber_capacity: capacity,
        backlog,
        ..TelemetryConfig::default()
    })
}

async fn spans(sub: &mut Subscription) -> Vec<SpanRecord> {
    let data = sub.next_traces().await.expect("a batch");
    data.resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

async fn logs(sub: &mut Subscription) -> Vec<LogRecord> {
    let data = sub.next_logs().await.expect("a batch");
    data.resource_logs
        .into_iter()
        .flat_map(|r| r.scope_logs)
        .flat_map(|s| s.log_records)
        .collect()
}

fn body(log: &LogRecord) -> &str {
    match log.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(s)) => s,
        other => panic!("not a string body: {other:?}"),
    }
}

fn has_attr(attrs: &[crate::proto::common::v1::KeyValue], key: &str, value: Value) -> bool {
    attrs.iter().any(|kv| {
        kv.key == key && kv.value.as_ref().and_then(|v| v.value.clone()) == Some(value.clone())
    })
}

#[tokio::test]
async fn spans_reach_their_trace_subscribers_when_they_start_and_end() {
    let hub = hub(64, 0);
    let parent = TraceParent::new_root();
    let _hold = hub.hold(parent.trace_id);
    let mut sub = hub.subscribe(parent.trace_id, Signal::Traces);
    let mut other = hub.subscribe(new_trace_id(), Signal::Traces);

    let cx = SpanCx::under(&hub, parent);
    let outer = cx.start("Container.stdout");
    let mut inner = outer
        .cx()
        .start_with("exec", vec![(attr::CACHED, false.into())]);
    inner.set_attribute(attr::EXIT_CODE, 0);
    inner.end();
    outer.fail("boom");

    let got = spans(&mut sub).await;
    let names: Vec<(&str, bool)> = got
        .iter()
        .map(|s| (s.name.as_str(), s.end_time_unix_nano != 0))
        .collect();
    assert_eq!(
        names,
        [
            ("Container.stdout", false),
            ("exec", false),
            ("exec", true),
            ("Container.stdout", true)
        ]
    );
    assert_eq!(got[0].parent_span_id, parent.span_id.to_bytes().to_vec());
    assert_eq!(
        got[1].parent_span_id, got[0].span_id,
        "child under its parent"
    );
    assert_eq!(got[2].span_id, got[1].span_id, "the end replaces the start");
    assert!(has_attr(
        &got[2].attributes,
        attr::EXIT_CODE,
        Value::IntValue(0)
    ));
    let status = got[3].status.as_ref().expect("status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "boom");
    assert!(
        got.iter()
            .all(|s| s.trace_id == parent.trace_id.to_bytes().to_vec())
    );

    // Nothing reached the other trace's subscriber.
    other.closer().close();
    assert!(other.next_traces().await.is_none());
}

#[tokio::test]
async fn a_dropped_span_ends_cancelled_and_a_cache_hit_is_one_finished_record() {
    let hub = hub(64, 0);
    let trace = new_trace_id();
    let mut sub = hub.subscribe(trace, Signal::Traces);
    let cx = SpanCx::new(&hub, trace, None);
    drop(cx.start("interrupted"));
    cx.record_done("cached op", vec![(attr::CACHED, true.into())]);
    let got = spans(&mut sub).await;
    assert_eq!(got.len(), 3);
    let cancelled = got[1].status.as_ref().expect("status");
    assert_eq!(
        (cancelled.code, cancelled.message.as_str()),
        (StatusCode::Error as i32, "cancelled")
    );
    assert_eq!(got[2].start_time_unix_nano, got[2].end_time_unix_nano);
    assert!(has_attr(
        &got[2].attributes,
        attr::CACHED,
        Value::BoolValue(true)
    ));
}

#[tokio::test]
async fn late_subscribers_get_the_backlog_and_unwatched_traces_keep_nothing() {
    let hub = hub(64, 2);
    let trace = new_trace_id();
    let cx = SpanCx::new(&hub, trace, None);
    cx.record_done("before anyone watches", vec![]);
    assert!(!hub.is_watched(trace));

    let hold = hub.hold(trace);
    for name in ["one", "two", "three"] {
        cx.record_done(name, vec![]);
    }
    let mut late = hub.subscribe(trace, Signal::Traces);
    let names: Vec<String> = spans(&mut late).await.into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["two", "three"], "the backlog keeps the last two");

    drop(hold);
    assert!(hub.is_watched(trace), "the subscription still watches it");
    drop(late);
    assert!(!hub.is_watched(trace));
}

#[tokio::test]
async fn a_slow_subscriber_is_told_what_it_missed_and_never_blocks_publishing() {
    let hub = hub(2, 0);
    let trace = new_trace_id();
    let mut sub = hub.subscribe(trace, Signal::Traces);
    let cx = SpanCx::new(&hub, trace, None);
    for i in 0..5 {
        cx.record_done(format!("span {i}"), vec![]);
    }
    let data = sub.next_traces().await.expect("a batch");
    let resource = data.resource_spans[0].resource.as_ref().expect("resource");
    assert!(has_attr(
        &resource.attributes,
        DROPPED_ATTR,
        Value::IntValue(3)
    ));
    assert_eq!(data.resource_spans[0].scope_spans[0].spans.len(), 2);
}

#[tokio::test]
async fn a_closed_subscription_delivers_what_came_before_the_close_then_ends() {
    let hub = hub(1024, 0);
    let trace = new_trace_id();
    let mut sub = hub.subscribe(trace, Signal::Logs);
    let closer = sub.closer();
    let cx = SpanCx::new(&hub, trace, None);
    let span = cx.start("exec");
    let mut out = span.log_stream(Stdio::Stdout);
    for i in 0..600 {
        out.write(format!("line {i}\n").as_bytes());
    }
    out.finish();
    span.end();
    closer.close();
    cx.start("after the close").end();

    let mut lines = Vec::new();
    while let Some(data) = sub.next_logs().await {
        lines.extend(
            data.resource_logs
                .into_iter()
                .flat_map(|r| r.scope_logs)
                .flat_map(|s| s.log_records),
        );
    }
    assert_eq!(lines.len(), 601, "600 lines and the end of the stream");
    assert_eq!(body(&lines[599]), "line 599\n");
    assert!(has_attr(
        &lines[600].attributes,
        attr::STDIO_EOF,
        Value::BoolValue(true)
    ));
}

#[tokio::test]
async fn log_streams_publish_whole_lines_scrubbed_and_end_with_eof() {
    let hub = hub(64, 0);
    let trace = new_trace_id();
    let mut sub = hub.subscribe(trace, Signal::Logs);
    let scrubber: Scrubber =
        Arc::new(|text: &str| std::borrow::Cow::Owned(text.replace("hunter2", "***")));
    let cx = SpanCx::new(&hub, trace, None).with_scrubber(scrubber);
    let span = cx.start("exec");
    let mut err = span.log_stream(Stdio::Stderr);
    err.write(b"password: hun");
    err.write(b"ter2\nsecond ");
    err.write(b"line\nno newline");
    err.finish();

    let got = logs(&mut sub).await;
    let bodies: Vec<&str> = got.iter().map(body).collect();
    assert_eq!(
        bodies,
        ["password: ***\n", "second line\n", "no newline", ""],
        "a secret split across reads is scrubbed in its line"
    );
    assert!(
        got.iter()
            .all(|l| has_attr(&l.attributes, attr::STDIO_STREAM, Value::IntValue(2)))
    );
    assert!(has_attr(
        &got[3].attributes,
        attr::STDIO_EOF,
        Value::BoolValue(true)
    ));
    let span_id = span.traceparent().expect("on").span_id.to_bytes().to_vec();
    assert!(got.iter().all(|l| l.span_id == span_id));
}

#[tokio::test]
async fn exported_spans_are_ingested_into_their_own_trace() {
    let hub = hub(64, 0);
    let trace = new_trace_id();
    let mut sub = hub.subscribe(trace, Signal::Traces);
    let sdk = SpanRecord {
        trace_id: trace.to_bytes().to_vec(),
        span_id: new_span_id().to_bytes().to_vec(),
        name: "python: main".to_owned(),
        ..Default::default()
    };
    let broken = SpanRecord {
        trace_id: vec![1, 2, 3],
        ..Default::default()
    };
    let data = crate::proto::trace::v1::TracesData {
        resource_spans: vec![crate::proto::trace::v1::ResourceSpans {
            scope_spans: vec![crate::proto::trace::v1::ScopeSpans {
                spans: vec![sdk, broken],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(
        hub.ingest_traces(data),
        1,
        "the span without a trace id is refused"
    );
    assert_eq!(spans(&mut sub).await[0].name, "python: main");
}

#[test]
fn spans_cost_nothing_when_off() {
    let cx = SpanCx::off();
    let mut span = cx.start("x");
    span.set_attribute(attr::CACHED, true);
    assert!(span.traceparent().is_none());
    assert!(!span.cx().is_on());
    span.end();
}

#[tokio::test]
async fn the_receiver_takes_protobuf_and_json_exports() {
    use crate::proto::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message as _;

    let hub = hub(64, 0);
    let trace = new_trace_id();
    let mut sub = hub.subscribe(trace, Signal::Traces);
    let receiver = OtlpReceiver::new(hub.clone());
    let request = |name: &str| ExportTraceServiceRequest {
        resource_spans: vec![crate::proto::trace::v1::ResourceSpans {
            scope_spans: vec![crate::proto::trace::v1::ScopeSpans {
                spans: vec![SpanRecord {
                    trace_id: trace.to_bytes().to_vec(),
                    span_id: new_span_id().to_bytes().to_vec(),
                    name: name.to_owned(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let answer = receiver
        .export_http(
            OTLP_TRACES_PATH,
            OtlpEncoding::Protobuf,
            &request("as protobuf").encode_to_vec(),
        )
        .expect("a signal path")
        .expect("decodes");
    assert_eq!(
        ExportTraceServiceResponse::decode(answer.as_slice()).expect("protobuf answer"),
        ExportTraceServiceResponse::default()
    );
    let json = serde_json::to_vec(&request("as json")).expect("json");
    assert!(
        String::from_utf8_lossy(&json).contains(&trace.to_string()),
        "hex ids"
    );
    receiver
        .export_http(OTLP_TRACES_PATH, OtlpEncoding::Json, &json)
        .expect("a signal path")
        .expect("decodes");
    let names: Vec<String> = spans(&mut sub).await.into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["as protobuf", "as json"]);

    assert!(
        receiver
            .export_http("/v1/other", OtlpEncoding::Json, b"{}")
            .is_none()
    );
    assert!(matches!(
        receiver.export_http(OTLP_LOGS_PATH, OtlpEncoding::Protobuf, b"\n"),
        Some(Err(ExportDecodeError::Protobuf { .. }))
    ));
    assert_eq!(
        OtlpEncoding::of_content_type(Some("application/json; charset=utf-8")),
        OtlpEncoding::Json
    );
}

#[tokio::test]
async fn a_subscription_to_everything_sees_every_trace_watched_or_not() {
    let hub = hub(64, 0);
    let mut all = hub.subscribe_all(Signal::Traces);
    assert_eq!(all.trace_id(), None);
    let (a, b) = (new_trace_id(), new_trace_id());
    let _watched = hub.hold(a);
    SpanCx::new(&hub, a, None).record_done("in a watched trace", vec![]);
    SpanCx::new(&hub, b, None).record_done("in an unwatched one", vec![]);
    let names: Vec<String> = spans(&mut all).await.into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["in a watched trace", "in an unwatched one"]);
    drop(all);
    SpanCx::new(&hub, b, None).record_done("after", vec![]);
    assert!(!hub.is_watched(b));
}

#[tokio::test]
async fn queues_and_backlogs_are_bounded_in_bytes_too() {
    let hub = Telemetry::new(TelemetryConfig {
        subscriber_bytes: 64 << 10,
        backlog_bytes: 32 << 10,
        ..TelemetryConfig::default()
    });
    let trace = new_trace_id();
    let _hold = hub.hold(trace);
    let mut early = hub.subscribe(trace, Signal::Logs);
    let span = SpanCx::new(&hub, trace, None).start("exec");
    let mut out = span.log_stream(Stdio::Stdout);
    let line = format!("{}\n", "x".repeat(10 << 10));
    for _ in 0..20 {
        out.write(line.as_bytes());
    }
    let mut late = hub.subscribe(trace, Signal::Logs);
    let data = early.next_logs().await.expect("a batch");
    let resource = data.resource_logs[0].resource.as_ref().expect("resource");
    let kept = data.resource_logs[0].scope_logs[0].log_records.len();
    assert!(
        (5..20).contains(&kept),
        "64 KiB hold about six 10 KiB lines, kept {kept}"
    );
    assert!(has_attr(
        &resource.attributes,
        DROPPED_ATTR,
        Value::IntValue(20 - kept as i64)
    ));
    let backlog = late.next_logs().await.expect("the backlog");
    let replayed = backlog.resource_logs[0].scope_logs[0].log_records.len();
    assert!(
        replayed < 5,
        "32 KiB of backlog holds about three lines, got {replayed}"
    );
}
