//! The OTLP receiver of `dagr run`: the program it starts exports its spans (an SDK's) here,
//! on 127.0.0.1 over OTLP/gRPC or OTLP/HTTP (`/v1/traces`, `/v1/logs`; protobuf or JSON), and
//! they join the progress view next to the engine's.

use std::net::SocketAddr;

use anyhow::Context as _;
use dagr_client::{TelemetryEvent, TraceParent};
use dagr_telemetry::{OtlpReceiver, Signal, SubscriptionCloser, Telemetry, TraceHold};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A running receiver; [`LocalReceiver::stop`] ends it and the events it feeds.
pub struct LocalReceiver {
    addr: SocketAddr,
    parent: TraceParent,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
    closers: Vec<SubscriptionCloser>,
    forwards: Vec<JoinHandle<()>>,
    _hold: TraceHold,
}

impl LocalReceiver {
    /// Listens on 127.0.0.1 for the spans and logs of the trace of `parent`, delivered as
    /// events until [`LocalReceiver::stop`].
    pub async fn start(
        parent: TraceParent,
    ) -> anyhow::Result<(LocalReceiver, mpsc::Receiver<TelemetryEvent>)> {
        let hub = Telemetry::new(dagr_telemetry::TelemetryConfig::default());
        let hold = hub.hold(parent.trace_id);
        let (tx, events) = mpsc::channel(1024);
        let mut closers = Vec::new();
        let mut forwards = Vec::new();
        for signal in [Signal::Traces, Signal::Logs] {
            let mut subscription = hub.subscribe(parent.trace_id, signal);
            closers.push(subscription.closer());
            let tx = tx.clone();
            forwards.push(tokio::spawn(async move {
                loop {
                    let event = match signal {
                        Signal::Traces => {
                            subscription.next_traces().await.map(TelemetryEvent::Spans)
                        }
                        _ => subscription.next_logs().await.map(TelemetryEvent::Logs),
                    };
                    let Some(event) = event else { return };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("listening for the program's telemetry on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let receiver = OtlpReceiver::new(hub);
        let (traces, logs) = receiver.grpc_services();
        let grpc = tonic::service::Routes::new(traces).add_service(logs);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, grpc, receiver, stopped));
        Ok((
            LocalReceiver {
                addr,
                parent,
                stop,
                server,
                closers,
                forwards,
                _hold: hold,
            },
            events,
        ))
    }

    /// The environment that points the program's OpenTelemetry SDK here, under `parent`.
    pub fn env(&self) -> Vec<(String, String)> {
        dagr_telemetry::exporter_env(self.addr.port(), Some(self.parent))
    }

    /// Stops listening (the program has exited, its exporter flushed), then ends the events
    /// once what was received has been delivered.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        for closer in &self.closers {
            closer.close();
        }
        for forward in self.forwards {
            let _ = forward.await;
        }
    }
}

/// Serves gRPC (by content type) and OTLP/HTTP on each connection until `stopped`; then lets
/// the open connections finish (an exporter flushing at exit is one of them).
async fn serve(
    listener: tokio::net::TcpListener,
    grpc: tonic::service::Routes,
    receiver: OtlpReceiver,
    mut stopped: oneshot::Receiver<()>,
) {
    use http_body_util::BodyExt as _;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "telemetry receiver accept failed");
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        while connections.try_join_next().is_some() {}
        let (grpc, receiver) = (grpc.clone(), receiver.clone());
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (mut grpc, receiver) = (grpc.clone(), receiver.clone());
                    async move {
                        let is_grpc = req
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                        if is_grpc {
                            use tower::Service as _;
                            return match grpc.call(req).await {
                                Ok(resp) => {
                                    Ok(resp.map(|b| b.map_err(BoxError::from).boxed_unsync()))
                                }
                                Err(never) => match never {},
                            };
                        }
                        let path = req.uri().path().to_owned();
                        let encoding = dagr_telemetry::OtlpEncoding::of_content_type(
                            req.headers()
                                .get(http::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok()),
                        );
                        let body = req.into_body().collect().await?.to_bytes();
                        let (status, answer) = match receiver.export_http(&path, encoding, &body) {
                            Some(Ok(answer)) => (http::StatusCode::OK, answer),
                            Some(Err(e)) => {
                                (http::StatusCode::BAD_REQUEST, e.to_string().into_bytes())
                            }
                            None => (http::StatusCode::NOT_FOUND, Vec::new()),
                        };
                        let mut resp = http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(answer))
                                .map_err(|never| match never {})
                                .boxed_unsync(),
                        );
                        *resp.status_mut() = status;
                        Ok::<_, hyper::Error>(resp)
                    }
                });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
    // Exporters send before they exit and the program has exited: this only guards against
    // one that hangs.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
