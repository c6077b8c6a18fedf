//! Following the engine's telemetry: [`Client::subscribe`] opens the `TracesSource` and
//! `LogsSource` subscriptions for the client's trace as gRPC streams on its query connection and
//! forwards what they carry into one [`TelemetryFeed`].

use std::time::Duration;

use dagr_telemetry::proto::logs::v1::LogsData;
use dagr_telemetry::proto::trace::v1::TracesData;
use dagr_telemetry::wire::SubscribeRequest;
use dagr_telemetry::wire::logs_source_client::LogsSourceClient;
use dagr_telemetry::wire::traces_source_client::TracesSourceClient;
use http_body_util::BodyExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{BoxError, Client, ClientError, Sender};

/// How long [`Client::close`] waits for the feeds to end once the session is closed.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Batches of the feed kept for a reader that has not read them yet.
const FEED_CAPACITY: usize = 4096;

/// What the engine's subscriptions deliver, in the order each stream delivered it.
#[derive(Debug, Clone)]
pub enum TelemetryEvent {
    Spans(TracesData),
    Logs(LogsData),
    /// A subscription failed (the engine refused it or the connection broke); it ends.
    Failed(String),
}

/// The spans and logs of a client's trace. The channel closes when both subscriptions have
/// ended: after the session ended and everything it produced was delivered.
#[derive(Debug)]
pub struct TelemetryFeed {
    pub events: mpsc::Receiver<TelemetryEvent>,
}

/// A gRPC channel over the client's query connection: every call is one HTTP/2 stream with the
/// client's identity and trace.
#[derive(Clone)]
struct Channel(Sender);

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = ClientError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, ClientError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ClientError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let sender = self.0.clone();
        Box::pin(async move {
            let request = request.map(|body| {
                body.map_err(|status| -> BoxError { Box::new(status) })
                    .boxed_unsync()
            });
            sender.send(request).await
        })
    }
}

impl Client {
    /// Subscribes to the spans and logs of this client's trace. Call it right after
    /// connecting: the engine keeps a bounded backlog of the trace, so what happened before
    /// the subscription arrived is delivered too.
    pub async fn subscribe(&mut self) -> Result<TelemetryFeed, ClientError> {
        let (tx, events) = mpsc::channel(FEED_CAPACITY);
        let request = || SubscribeRequest {
            trace_id: self.traceparent.trace_id.to_bytes().to_vec(),
            client_id: self.metadata.client_id.clone(),
        };
        let channel = Channel(self.sender.clone());
        let mut traces_client = TracesSourceClient::new(channel.clone());
        let mut logs_client = LogsSourceClient::new(channel);
        let (traces_request, logs_request) = (request(), request());
        let traces_tx = tx.clone();
        let traces = tokio::spawn(async move {
            let subscribed = traces_client.subscribe(traces_request);
            forward(subscribed, traces_tx, TelemetryEvent::Spans).await;
        });
        let logs = tokio::spawn(async move {
            let subscribed = logs_client.subscribe(logs_request);
            forward(subscribed, tx, TelemetryEvent::Logs).await;
        });
        self.feeds.push(traces);
        self.feeds.push(logs);
        Ok(TelemetryFeed { events })
    }
}

/// Opens one subscription and forwards its messages until it ends (or the feed's reader is
/// gone); a refused subscription is reported as [`TelemetryEvent::Failed`].
async fn forward<T>(
    subscribed: impl std::future::Future<
        Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    >,
    tx: mpsc::Sender<TelemetryEvent>,
    wrap: fn(T) -> TelemetryEvent,
) {
    let mut stream = match subscribed.await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let _ = tx
                .send(TelemetryEvent::Failed(status.message().to_owned()))
                .await;
            return;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                if tx.send(wrap(message)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(status) => {
                let _ = tx
                    .send(TelemetryEvent::Failed(status.message().to_owned()))
                    .await;
                return;
            }
        }
    }
}

/// Waits for the feeds to end, at most [`DRAIN_LIMIT`]; the ones still running are stopped.
pub(crate) async fn drain(feeds: Vec<JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    for mut feed in feeds {
        if tokio::time::timeout_at(deadline, &mut feed).await.is_err() {
            feed.abort();
        }
    }
}
