//! Recording: [`SpanCx`] says where new spans go (hub, trace, parent span, scrubber), [`Span`]
//! is one running span, [`LogStream`] turns one output stream of a span into log records.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::{Span as SpanRecord, Status, status::StatusCode};

use crate::hub::{Item, Telemetry};
use crate::ids::{SpanId, TraceId, TraceParent, new_span_id};

/// Replaces secret values in a text (spans' string attributes, status messages and log lines
/// pass through it before they are published); borrows the text when it holds none.
pub type Scrubber = Arc<dyn for<'a> Fn(&'a str) -> Cow<'a, str> + Send + Sync>;

/// Attribute keys the engine and its clients share (Dagger's names where Dagger has one).
pub mod attr {
    /// `true` on a solver vertex whose result came from the cache.
    pub const CACHED: &str = "dagger.io/dag.cached";
    /// The content digest of the GraphQL call (or vertex) a span is about.
    pub const DIGEST: &str = "dagger.io/dag.digest";
    /// `true` on spans a live view hides unless asked for internals (`--debug`).
    pub const INTERNAL: &str = "dagger.io/ui.internal";
    /// The client a span's work was done for.
    pub const CLIENT_ID: &str = "dagger.io/client.id";
    /// `true` on a solver vertex whose result came from a remote cache (with `CACHED`).
    pub const REMOTE_CACHE: &str = "dagr.cache.remote";
    /// The exit code of an exec.
    pub const EXIT_CODE: &str = "dagr.exec.exit_code";
    /// The stream of a log record of process output: 1 stdout, 2 stderr.
    pub const STDIO_STREAM: &str = "stdio.stream";
    /// `true` on the last log record of a stream: nothing of that stream follows.
    pub const STDIO_EOF: &str = "stdio.eof";
}

/// Which output stream of a process a [`LogStream`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    Stdout = 1,
    Stderr = 2,
}

/// A string, integer or boolean attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.to_owned())
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<i32> for AttrValue {
    fn from(v: i32) -> Self {
        AttrValue::Int(i64::from(v))
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

fn key_value(key: &str, value: AttrValue) -> KeyValue {
    let value = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s),
        AttrValue::Int(i) => any_value::Value::IntValue(i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Where new spans go: the hub, the trace, the span they hang under (none: a root span) and the
/// scrubber their texts pass through. [`SpanCx::off`] records nothing, at no cost.
#[derive(Clone, Default)]
pub struct SpanCx {
    inner: Option<Arc<Cx>>,
}

struct Cx {
    hub: Telemetry,
    trace_id: TraceId,
    parent: Option<SpanId>,
    scrubber: Option<Scrubber>,
}

impl std::fmt::Debug for SpanCx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("SpanCx(off)"),
            Some(cx) => f
                .debug_struct("SpanCx")
                .field("trace_id", &cx.trace_id)
                .field("parent", &cx.parent)
                .finish(),
        }
    }
}

impl SpanCx {
    /// Records nothing.
    pub fn off() -> SpanCx {
        SpanCx { inner: None }
    }

    /// Spans under `parent` (a span of another process, e.g. the client's), in its trace.
    pub fn under(hub: &Telemetry, parent: TraceParent) -> SpanCx {
        SpanCx::new(hub, parent.trace_id, Some(parent.span_id))
    }

    /// Spans of `trace_id` under `parent` (`None`: root spans).
    pub fn new(hub: &Telemetry, trace_id: TraceId, parent: Option<SpanId>) -> SpanCx {
        SpanCx {
            inner: Some(Arc::new(Cx {
                hub: hub.clone(),
                trace_id,
                parent,
                scrubber: None,
            })),
        }
    }

    /// The same place, with texts passing through `scrubber` (inherited by child spans).
    pub fn with_scrubber(self, scrubber: Scrubber) -> SpanCx {
        match self.inner {
            None => self,
            Some(cx) => SpanCx {
                inner: Some(Arc::new(Cx {
                    hub: cx.hub.clone(),
                    trace_id: cx.trace_id,
                    parent: cx.parent,
                    scrubber: Some(scrubber),
                })),
            },
        }
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    pub fn trace_id(&self) -> Option<TraceId> {
        self.inner.as_ref().map(|cx| cx.trace_id)
    }

    /// The `traceparent` of the span new spans hang under (for another process to continue).
    pub fn traceparent(&self) -> Option<TraceParent> {
        let cx = self.inner.as_ref()?;
        Some(TraceParent {
            trace_id: cx.trace_id,
            span_id: cx.parent?,
            sampled: true,
        })
    }

    /// One output stream of a process as log records of the span new spans hang under (the
    /// runner of an op logs its process's output to the op's span this way). Off without one.
    pub fn log_stream(&self, stream: Stdio) -> LogStream {
        LogStream {
            target: self.inner.as_ref().and_then(|cx| {
                Some(LogTarget {
                    cx: cx.clone(),
                    span_id: cx.parent?.to_bytes().to_vec(),
                })
            }),
            stream,
            pending: Vec::new(),
        }
    }

    /// Starts a span; it is published at once (running) and again when it ends.
    pub fn start(&self, name: impl Into<String>) -> Span {
        self.start_with(name, Vec::new())
    }

    /// Starts a span with attributes.
    pub fn start_with(
        &self,
        name: impl Into<String>,
        attributes: Vec<(&'static str, AttrValue)>,
    ) -> Span {
        let Some(cx) = &self.inner else {
            return Span { inner: None };
        };
        let record = cx.record(name.into(), attributes);
        cx.hub
            .publish(cx.trace_id, Item::Span(Arc::new(record.clone())));
        Span {
            inner: Some(Box::new(Running {
                cx: cx.clone(),
                record,
            })),
        }
    }

    /// Records a span that is already over (a cache hit): published once, ended, status ok.
    pub fn record_done(&self, name: impl Into<String>, attributes: Vec<(&'static str, AttrValue)>) {
        let Some(cx) = &self.inner else {
            return;
        };
        let mut record = cx.record(name.into(), attributes);
        record.end_time_unix_nano = record.start_time_unix_nano;
        record.status = Some(Status {
            code: StatusCode::Ok as i32,
            ..Default::default()
        });
        cx.hub.publish(cx.trace_id, Item::Span(Arc::new(record)));
    }
}

impl Cx {
    fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.scrubber {
            Some(scrub) => scrub(text),
            None => Cow::Borrowed(text),
        }
    }

    fn scrub_value(&self, value: AttrValue) -> AttrValue {
        match value {
            AttrValue::Str(s) => AttrValue::Str(self.scrub(&s).into_owned()),
            other => other,
        }
    }

    fn record(&self, name: String, attributes: Vec<(&'static str, AttrValue)>) -> SpanRecord {
        SpanRecord {
            trace_id: self.trace_id.to_bytes().to_vec(),
            span_id: new_span_id().to_bytes().to_vec(),
            parent_span_id: self
                .parent
                .map(|p| p.to_bytes().to_vec())
                .unwrap_or_default(),
            // Sampled.
            flags: 1,
            name: self.scrub(&name).into_owned(),
            kind: opentelemetry_proto::tonic::trace::v1::span::SpanKind::Internal as i32,
            start_time_unix_nano: now_nanos(),
            attributes: attributes
                .into_iter()
                .map(|(k, v)| key_value(k, self.scrub_value(v)))
                .collect(),
            ..Default::default()
        }
    }
}

/// A running span. It ends with [`Span::end`] or [`Span::fail`]; dropped without either (its
/// work was cancelled), it ends as failed with "cancelled".
#[derive(Default)]
pub struct Span {
    inner: Option<Box<Running>>,
}

struct Running {
    cx: Arc<Cx>,
    record: SpanRecord,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("Span(off)"),
            Some(r) => f
                .debug_struct("Span")
                .field("name", &r.record.name)
                .finish_non_exhaustive(),
        }
    }
}

impl Span {
    /// A span that records nothing.
    pub fn off() -> Span {
        Span { inner: None }
    }

    fn span_id(&self) -> Option<SpanId> {
        let running = self.inner.as_ref()?;
        let bytes: [u8; 8] = running.record.span_id.as_slice().try_into().ok()?;
        Some(SpanId::from_bytes(bytes))
    }

    /// Where this span's children go.
    pub fn cx(&self) -> SpanCx {
        let Some(running) = &self.inner else {
            return SpanCx::off();
        };
        SpanCx {
            inner: Some(Arc::new(Cx {
                hub: running.cx.hub.clone(),
                trace_id: running.cx.trace_id,
                parent: self.span_id(),
                scrubber: running.cx.scrubber.clone(),
            })),
        }
    }

    /// This span as a `traceparent`, for a process whose spans should hang under it.
    pub fn traceparent(&self) -> Option<TraceParent> {
        Some(TraceParent {
            trace_id: self.inner.as_ref()?.cx.trace_id,
            span_id: self.span_id()?,
            sampled: true,
        })
    }

    /// Sets an attribute (published when the span ends).
    pub fn set_attribute(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        let Some(running) = &mut self.inner else {
            return;
        };
        let value = running.cx.scrub_value(value.into());
        running.record.attributes.retain(|kv| kv.key != key);
        running.record.attributes.push(key_value(key, value));
    }

    /// One output stream of this span's process, as log records.
    pub fn log_stream(&self, stream: Stdio) -> LogStream {
        LogStream {
            target: self.inner.as_ref().map(|r| LogTarget {
                cx: r.cx.clone(),
                span_id: r.record.span_id.clone(),
            }),
            stream,
            pending: Vec::new(),
        }
    }

    /// Ends the span successfully.
    pub fn end(mut self) {
        self.finish(StatusCode::Ok, None);
    }

    /// Ends the span as failed with `message`.
    pub fn fail(mut self, message: &str) {
        self.finish(StatusCode::Error, Some(message));
    }

    /// Ends the span: successfully on `Ok`, failed with the error's message on `Err`.
    pub fn end_with<T, E: std::fmt::Display>(self, result: &Result<T, E>) {
        match result {
            Ok(_) => self.end(),
            Err(e) => self.fail(&e.to_string()),
        }
    }

    fn finish(&mut self, code: StatusCode, message: Option<&str>) {
        let Some(mut running) = self.inner.take() else {
            return;
        };
        running.record.end_time_unix_nano = now_nanos().max(running.record.start_time_unix_nano);
        running.record.status = Some(Status {
            code: code as i32,
            message: message
                .map(|m| running.cx.scrub(m).into_owned())
                .unwrap_or_default(),
        });
        let Running { cx, record } = *running;
        cx.hub.publish(cx.trace_id, Item::Span(Arc::new(record)));
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish(StatusCode::Error, Some("cancelled"));
    }
}

struct LogTarget {
    cx: Arc<Cx>,
    span_id: Vec<u8>,
}

/// Longest partial line held back waiting for its end: longer ones are published as they are.
const MAX_PENDING_LINE: usize = 8 << 10;

/// One output stream of a span's process as log records: each complete line becomes a record
/// at once (a line is scrubbed whole, so a secret split across reads is still replaced); a
/// partial line waits for its end up to [`MAX_PENDING_LINE`] bytes. [`LogStream::finish`] is
/// the stream's explicit end: the held-back rest, then a record with [`attr::STDIO_EOF`].
pub struct LogStream {
    target: Option<LogTarget>,
    stream: Stdio,
    pending: Vec<u8>,
}

impl LogStream {
    /// Output as it is read.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.target.is_none() {
            return;
        }
        self.pending.extend_from_slice(bytes);
        let cut = match self.pending.iter().rposition(|&b| b == b'\n') {
            Some(last_newline) => last_newline + 1,
            None if self.pending.len() >= MAX_PENDING_LINE => self.pending.len(),
            None => return,
        };
        let rest = self.pending.split_off(cut);
        let complete = std::mem::replace(&mut self.pending, rest);
        self.emit(&complete, false);
    }

    /// Ends the stream: what is held back, then the end-of-stream record.
    pub fn finish(mut self) {
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            self.emit(&pending, false);
        }
        self.emit(b"", true);
    }

    fn emit(&self, bytes: &[u8], eof: bool) {
        let Some(target) = &self.target else {
            return;
        };
        let text = String::from_utf8_lossy(bytes);
        let body = target.cx.scrub(&text).into_owned();
        let mut attributes = vec![key_value(
            attr::STDIO_STREAM,
            AttrValue::Int(self.stream as i64),
        )];
        if eof {
            attributes.push(key_value(attr::STDIO_EOF, AttrValue::Bool(true)));
        }
        let now = now_nanos();
        let record = LogRecord {
            time_unix_nano: now,
            observed_time_unix_nano: now,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(body)),
            }),
            attributes,
            trace_id: target.cx.trace_id.to_bytes().to_vec(),
            span_id: target.span_id.clone(),
            ..Default::default()
        };
        target
            .cx
            .hub
            .publish(target.cx.trace_id, Item::Log(Arc::new(record)));
    }
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream")
            .field("stream", &self.stream)
            .field("pending", &self.pending.len())
            .finish()
    }
}
