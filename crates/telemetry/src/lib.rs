//! dagr-telemetry: the spans and logs of the engine's work, published per trace to the clients
//! that watch it.
//!
//! - [`Telemetry`] is the hub (`hub`): records are published to their trace's topic, which
//!   keeps a bounded backlog and fans them out to [`Subscription`]s with bounded queues (a slow
//!   subscriber is told how many it missed, never waited for). A [`TraceHold`] keeps a topic
//!   while a session uses its trace; a [`SubscriptionCloser`] ends a subscription after what was
//!   queued before it (the end-of-stream of a session's telemetry).
//! - [`SpanCx`] says where new spans go (hub, trace, parent, [`Scrubber`]); [`Span`] is a
//!   running span, published when it starts and when it ends (a dropped span ends "cancelled");
//!   [`LogStream`] turns a process's output into log records line by line, ending with an
//!   explicit end-of-stream record ([`attr::STDIO_EOF`]).
//! - Ids and the W3C [`TraceParent`] are in `ids`; subscriptions are read as OTLP `TracesData`
//!   and `LogsData` and other processes' OTLP exports are ingested (`otlp`). The wire types are
//!   `opentelemetry-proto`'s ([`proto`]); the subscription services' stubs are in [`wire`].
//!   [`OtlpReceiver`] is the OTLP collector side (gRPC and HTTP export requests into a hub) and
//!   [`exporter_env`] the environment that points a program's OTel SDK at one.
//!
//! Nothing here does IO or spawns: the engine serves subscriptions and OTLP receivers.

mod hub;
mod ids;
mod otlp;
mod receiver;
mod span;

pub use hub::{Signal, Subscription, SubscriptionCloser, Telemetry, TelemetryConfig, TraceHold};
pub use ids::{SpanId, TraceId, TraceParent, TraceParentError, new_span_id, new_trace_id};
pub use otlp::DROPPED_ATTR;
pub use receiver::{
    ExportDecodeError, OTLP_LOGS_PATH, OTLP_TRACES_PATH, OtlpEncoding, OtlpReceiver, exporter_env,
};
pub use span::{AttrValue, LogStream, Scrubber, Span, SpanCx, Stdio, attr};

/// The OTLP wire types (`opentelemetry-proto`, generated with tonic and prost).
pub use opentelemetry_proto::tonic as proto;

/// The subscription services (`proto/servers.proto`: `TracesSource`, `LogsSource` and
/// `MetricsSource`, each `Subscribe(SubscribeRequest)` streaming OTLP data), clients and
/// servers, as the engine serves them and clients call them.
pub mod wire {
    #![allow(clippy::all)]
    tonic::include_proto!("telemetry");
}

#[cfg(test)]
mod tests;
