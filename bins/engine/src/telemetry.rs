//! Telemetry on the engine's listeners: where each request's spans go ([`EngineTelemetry::
//! request_span`]: under the client's `traceparent`, else at the root of its session's trace),
//! and the subscription services (`TracesSource`, `LogsSource`, `MetricsSource`), served as gRPC
//! next to everything else.
//!
//! A subscription follows one trace for one client and ends when that client's session ends,
//! after every record published before (the session's teardown closes it, and by then every
//! request of the session has answered, so every span it made has ended and every exec's
//! output has been logged up to its end-of-stream record).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use dagr_engine_state::{Session, SessionRegistry};
use dagr_metadata::{CLIENT_METADATA_HEADER, ClientMetadata};
use dagr_session::{PresetClient, RequestScope};
use dagr_telemetry::proto::logs::v1::LogsData;
use dagr_telemetry::proto::metrics::v1::MetricsData;
use dagr_telemetry::proto::trace::v1::TracesData;
use dagr_telemetry::wire::SubscribeRequest;
use dagr_telemetry::wire::logs_source_server::{LogsSource, LogsSourceServer};
use dagr_telemetry::wire::metrics_source_server::{MetricsSource, MetricsSourceServer};
use dagr_telemetry::wire::traces_source_server::{TracesSource, TracesSourceServer};
use dagr_telemetry::{Signal, SpanCx, Subscription, Telemetry, TraceHold, TraceId, TraceParent};
use futures::Stream;
use parking_lot::Mutex;
use sha2::Digest as _;
use tonic::{Request, Response, Status};

/// The engine's telemetry: the hub and which traces each live session keeps.
pub struct EngineTelemetry {
    hub: Telemetry,
    /// `--no-telemetry` turns it off: requests get no spans.
    enabled: bool,
    registry: SessionRegistry,
    /// The traces each session's requests used, held (with their backlog) until it ends.
    holds: Mutex<HashMap<String, Vec<TraceHold>>>,
}

/// The trace of a session whose clients send no `traceparent`: derived from its id, so a
/// subscriber that names no trace gets it.
pub fn session_trace(session_id: &str) -> TraceId {
    let digest = sha2::Sha256::digest(session_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    if bytes == [0; 16] {
        bytes[15] = 1;
    }
    TraceId::from_bytes(bytes)
}

impl EngineTelemetry {
    pub fn new(hub: Telemetry, registry: SessionRegistry, enabled: bool) -> Arc<EngineTelemetry> {
        Arc::new(EngineTelemetry {
            hub,
            enabled,
            registry,
            holds: Mutex::new(HashMap::new()),
        })
    }

    pub fn hub(&self) -> &Telemetry {
        &self.hub
    }

    /// Where the spans of a request go: under its `traceparent` header, else at the root of
    /// its session's trace. The trace is kept for the session (late subscribers see its
    /// backlog) until the session ends.
    pub fn request_span(
        self: &Arc<Self>,
        scope: &RequestScope,
        headers: &http::HeaderMap,
    ) -> SpanCx {
        if !self.enabled {
            return SpanCx::off();
        }
        let parent = headers
            .get(TraceParent::HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<TraceParent>().ok());
        let session = scope.session();
        let cx = match parent {
            Some(parent) => SpanCx::under(&self.hub, parent),
            None => SpanCx::new(&self.hub, session_trace(session.id()), None),
        };
        if let Some(trace_id) = cx.trace_id() {
            self.keep(session, trace_id);
        }
        cx
    }

    /// Holds `trace_id` for `session` until it ends.
    fn keep(self: &Arc<Self>, session: &Arc<Session>, trace_id: TraceId) {
        let first = {
            let mut holds = self.holds.lock();
            let held = holds.entry(session.id().to_owned()).or_default();
            if held.iter().any(|h| h.trace_id() == trace_id) {
                return;
            }
            held.push(self.hub.hold(trace_id));
            held.len() == 1
        };
        if first {
            let this = Arc::clone(self);
            let id = session.id().to_owned();
            let released = session.on_teardown(Box::new(move || {
                this.holds.lock().remove(&id);
                Box::pin(async {})
            }));
            if released.is_err() {
                // Already ending: nothing will release it later.
                self.holds.lock().remove(session.id());
            }
        }
    }

    /// The gRPC services of the subscriptions.
    pub fn services(
        self: &Arc<Self>,
    ) -> (
        TracesSourceServer<Subscriptions>,
        LogsSourceServer<Subscriptions>,
        MetricsSourceServer<Subscriptions>,
    ) {
        let subs = Subscriptions {
            telemetry: Arc::clone(self),
        };
        (
            TracesSourceServer::new(subs.clone()),
            LogsSourceServer::new(subs.clone()),
            MetricsSourceServer::new(subs),
        )
    }
}

/// The subscription services.
#[derive(Clone)]
pub struct Subscriptions {
    telemetry: Arc<EngineTelemetry>,
}

type DataStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Subscriptions {
    /// Admits the subscriber (its metadata, as for any request; a nested client's from its
    /// listener) and subscribes it to the requested trace (its session's when none is named),
    /// until its session ends.
    fn open(
        &self,
        req: &Request<SubscribeRequest>,
        signal: Signal,
    ) -> Result<Subscription, Status> {
        let md = match req.extensions().get::<PresetClient>() {
            Some(preset) => (*preset.0).clone(),
            None => {
                let header = req.metadata().get(CLIENT_METADATA_HEADER).ok_or_else(|| {
                    Status::unauthenticated(format!("missing {CLIENT_METADATA_HEADER}"))
                })?;
                ClientMetadata::decode(header.as_bytes())
                    .map_err(|e| Status::unauthenticated(e.to_string()))?
            }
        };
        let active = self
            .telemetry
            .registry
            .begin_request(&md)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let session = Arc::clone(active.session());
        let trace_id = match req.get_ref().trace_id.as_slice() {
            [] => session_trace(session.id()),
            bytes => {
                let bytes: [u8; 16] = bytes.try_into().map_err(|_| {
                    Status::invalid_argument(format!(
                        "trace_id has {} bytes, a trace id has 16",
                        bytes.len()
                    ))
                })?;
                TraceId::from_bytes(bytes)
            }
        };
        let subscription = self.telemetry.hub.subscribe(trace_id, signal);
        let closer = subscription.closer();
        let registered = session.on_teardown(Box::new(move || {
            closer.close();
            Box::pin(async {})
        }));
        if registered.is_err() {
            subscription.closer().close();
        }
        // The subscription does not keep the session in flight: it ends with it.
        drop(active);
        Ok(subscription)
    }
}

#[tonic::async_trait]
impl TracesSource for Subscriptions {
    type SubscribeStream = DataStream<TracesData>;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let subscription = self.open(&req, Signal::Traces)?;
        let stream = futures::stream::unfold(subscription, |mut sub| async move {
            sub.next_traces().await.map(|data| (Ok(data), sub))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl LogsSource for Subscriptions {
    type SubscribeStream = DataStream<LogsData>;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let subscription = self.open(&req, Signal::Logs)?;
        let stream = futures::stream::unfold(subscription, |mut sub| async move {
            sub.next_logs().await.map(|data| (Ok(data), sub))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl MetricsSource for Subscriptions {
    type SubscribeStream = DataStream<MetricsData>;

    /// The engine records no metrics over OTLP (its metrics are Prometheus text on `/metrics`):
    /// the stream is admitted like the others and ends with the subscriber's session.
    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let subscription = self.open(&req, Signal::Metrics)?;
        let stream = futures::stream::unfold(subscription, |mut sub| async move {
            sub.closed().await;
            None
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
