//! The OTLP side: subscriptions read as `TracesData` / `LogsData` batches, and spans and logs
//! that other processes export (an SDK inside a nested exec, a CLI's child) ingested into the
//! hub under their own trace.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogsData, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, TracesData};

use crate::hub::{Item, Subscription, Telemetry};
use crate::ids::TraceId;

/// The resource attribute that tells a subscriber how many records it missed before a batch
/// because it did not keep up (present only when some were dropped).
pub const DROPPED_ATTR: &str = "dagr.telemetry.dropped";

/// The instrumentation scope of the engine's own spans and logs.
const SCOPE: &str = "dagr";

fn resource(dropped: u64) -> Resource {
    let mut attributes = vec![KeyValue {
        key: "service.name".to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("dagr-engine".to_owned())),
        }),
        ..Default::default()
    }];
    if dropped > 0 {
        attributes.push(KeyValue {
            key: DROPPED_ATTR.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(
                    i64::try_from(dropped).unwrap_or(i64::MAX),
                )),
            }),
            ..Default::default()
        });
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: SCOPE.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    })
}

/// How many records at most one batch carries.
const BATCH: usize = 512;

impl Subscription {
    /// The next spans of a traces subscription; `None` once it is closed and drained.
    pub async fn next_traces(&mut self) -> Option<TracesData> {
        let batch = self.next_batch(BATCH).await?;
        let spans = batch
            .items
            .into_iter()
            .filter_map(|item| match item {
                Item::Span(span) => Some(Arc::unwrap_or_clone(span)),
                Item::Log(_) => None,
            })
            .collect();
        Some(TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource(batch.dropped)),
                scope_spans: vec![ScopeSpans {
                    scope: scope(),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    /// The next log records of a logs subscription; `None` once it is closed and drained.
    pub async fn next_logs(&mut self) -> Option<LogsData> {
        let batch = self.next_batch(BATCH).await?;
        let log_records = batch
            .items
            .into_iter()
            .filter_map(|item| match item {
                Item::Log(log) => Some(Arc::unwrap_or_clone(log)),
                Item::Span(_) => None,
            })
            .collect();
        Some(LogsData {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource(batch.dropped)),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }
}

fn trace_id_of(bytes: &[u8]) -> Option<TraceId> {
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(TraceId::from_bytes(bytes))
}

impl Telemetry {
    /// Publishes spans exported by another process (OTLP), each to its own trace. Returns how
    /// many were refused for lacking a valid trace id.
    pub fn ingest_traces(&self, data: TracesData) -> usize {
        let mut refused = 0;
        for span in data
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
        {
            match trace_id_of(&span.trace_id) {
                Some(trace_id) => self.publish(trace_id, Item::Span(Arc::new(span))),
                None => refused += 1,
            }
        }
        refused
    }

    /// Publishes log records exported by another process (OTLP), each to its own trace. Returns
    /// how many were refused for lacking a valid trace id.
    pub fn ingest_logs(&self, data: LogsData) -> usize {
        let mut refused = 0;
        for log in data
            .resource_logs
            .into_iter()
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
        {
            match trace_id_of(&log.trace_id) {
                Some(trace_id) => self.publish(trace_id, Item::Log(Arc::new(log))),
                None => refused += 1,
            }
        }
        refused
    }
}
