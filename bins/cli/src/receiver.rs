//! The OTLP receiver of `dagr run`: the program it starts exports its spans (an SDK's) here,
//! over gRPC on 127.0.0.1, and they join the progress view next to the engine's.

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
        let (traces, logs) = OtlpReceiver::new(hub).grpc_services();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let served = tonic::transport::Server::builder()
                .add_service(traces)
                .add_service(logs)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the telemetry receiver stopped");
            }
        });
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
