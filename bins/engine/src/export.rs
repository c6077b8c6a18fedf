//! Export to an external OpenTelemetry collector (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`): every finished span and every log record of every trace,
//! over OTLP/gRPC or OTLP/HTTP (protobuf). Live span starts stay on the engine's own
//! subscriptions: collectors expect a span once, when it has ended.
//!
//! The exporter reads subscriptions to every trace (bounded: when the collector is slower than
//! the engine, records are dropped and counted, never waited for). A batch the collector refuses
//! or cannot take is dropped with a warning. At shutdown, what is queued is sent for at most
//! [`FLUSH_LIMIT`].

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use dagr_telemetry::proto::collector::logs::v1::ExportLogsServiceRequest;
use dagr_telemetry::proto::collector::logs::v1::logs_service_client::LogsServiceClient;
use dagr_telemetry::proto::collector::trace::v1::ExportTraceServiceRequest;
use dagr_telemetry::proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use dagr_telemetry::{OTLP_LOGS_PATH, OTLP_TRACES_PATH, Signal, SubscriptionCloser, Telemetry};
use http_body_util::Full;
use prost::Message as _;
use tokio::task::JoinHandle;

use crate::config::{OtlpExport, OtlpProtocol};

/// How long shutdown waits for queued records to reach the collector.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// How one batch reaches the collector.
#[derive(Clone)]
enum Transport {
    Grpc {
        traces: TraceServiceClient<tonic::transport::Channel>,
        logs: LogsServiceClient<tonic::transport::Channel>,
    },
    Http {
        client: hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Full<Bytes>,
        >,
        base: String,
    },
}

impl Transport {
    fn new(config: &OtlpExport) -> anyhow::Result<Transport> {
        let base = config.endpoint.trim_end_matches('/').to_owned();
        Ok(match config.protocol {
            OtlpProtocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(base.clone())
                    .with_context(|| format!("OTLP endpoint {base}"))?
                    .connect_lazy();
                Transport::Grpc {
                    traces: TraceServiceClient::new(channel.clone()),
                    logs: LogsServiceClient::new(channel),
                }
            }
            OtlpProtocol::HttpProtobuf => Transport::Http {
                client: hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http(),
                base,
            },
        })
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let Transport::Http { client, base } = self else {
            return Ok(());
        };
        let request = http::Request::post(format!("{base}{path}"))
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))?;
        let response = client.request(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "the collector answered {}",
            response.status()
        );
        Ok(())
    }

    async fn send_traces(&self, request: ExportTraceServiceRequest) -> anyhow::Result<()> {
        match self {
            Transport::Grpc { traces, .. } => {
                traces.clone().export(request).await?;
                Ok(())
            }
            Transport::Http { .. } => self.post(OTLP_TRACES_PATH, request.encode_to_vec()).await,
        }
    }

    async fn send_logs(&self, request: ExportLogsServiceRequest) -> anyhow::Result<()> {
        match self {
            Transport::Grpc { logs, .. } => {
                logs.clone().export(request).await?;
                Ok(())
            }
            Transport::Http { .. } => self.post(OTLP_LOGS_PATH, request.encode_to_vec()).await,
        }
    }
}

/// The running exporter.
pub struct Exporter {
    closers: Vec<SubscriptionCloser>,
    tasks: Vec<JoinHandle<()>>,
}

impl Exporter {
    /// Starts exporting everything `hub` publishes from now on.
    pub fn start(hub: &Telemetry, config: &OtlpExport) -> anyhow::Result<Exporter> {
        let transport = Transport::new(config)?;
        let endpoint = config.endpoint.clone();
        let mut closers = Vec::new();
        let mut tasks = Vec::new();
        for signal in [Signal::Traces, Signal::Logs] {
            let mut subscription = hub.subscribe_all(signal);
            closers.push(subscription.closer());
            let transport = transport.clone();
            let endpoint = endpoint.clone();
            tasks.push(tokio::spawn(async move {
                let mut failures: u64 = 0;
                loop {
                    let sent = match signal {
                        Signal::Traces => {
                            let Some(mut data) = subscription.next_traces().await else {
                                break;
                            };
                            // Only finished spans: a collector takes each span once.
                            for scope in data
                                .resource_spans
                                .iter_mut()
                                .flat_map(|r| r.scope_spans.iter_mut())
                            {
                                scope.spans.retain(|s| s.end_time_unix_nano != 0);
                            }
                            if data
                                .resource_spans
                                .iter()
                                .all(|r| r.scope_spans.iter().all(|s| s.spans.is_empty()))
                            {
                                continue;
                            }
                            transport
                                .send_traces(ExportTraceServiceRequest {
                                    resource_spans: data.resource_spans,
                                })
                                .await
                        }
                        _ => {
                            let Some(data) = subscription.next_logs().await else {
                                break;
                            };
                            transport
                                .send_logs(ExportLogsServiceRequest {
                                    resource_logs: data.resource_logs,
                                })
                                .await
                        }
                    };
                    if let Err(e) = sent {
                        failures += 1;
                        // The first failure and then every hundredth: a collector that is away
                        // must not flood the engine's log.
                        if failures % 100 == 1 {
                            tracing::warn!(
                                endpoint = %endpoint,
                                error = %format!("{e:#}"),
                                failures,
                                "exporting telemetry failed; the batch is dropped"
                            );
                        }
                    }
                }
            }));
        }
        tracing::info!(endpoint = %config.endpoint, protocol = ?config.protocol, "exporting telemetry");
        Ok(Exporter { closers, tasks })
    }

    /// Sends what is queued (for at most [`FLUSH_LIMIT`]) and stops.
    pub async fn shutdown(self) {
        for closer in &self.closers {
            closer.close();
        }
        let deadline = tokio::time::Instant::now() + FLUSH_LIMIT;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                tracing::warn!("telemetry export did not finish within {FLUSH_LIMIT:?}");
            }
        }
    }
}
