//! [`OtlpReceiver`]: the OTLP collector services (gRPC `TraceService` / `LogsService` `Export`,
//! and the same over HTTP: a protobuf or JSON body POSTed to `/v1/traces` or `/v1/logs`) publishing what
//! other processes export into a hub. Execs with nesting export to the engine's; the programs
//! `dagr run` starts export to the CLI's.

use crate::hub::Telemetry;
use crate::proto::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use crate::proto::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use crate::proto::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use crate::proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use crate::proto::logs::v1::LogsData;
use crate::proto::trace::v1::TracesData;

/// The HTTP paths of OTLP/HTTP.
pub const OTLP_TRACES_PATH: &str = "/v1/traces";
pub const OTLP_LOGS_PATH: &str = "/v1/logs";

/// A body that is not an OTLP export request in the encoding its content type names.
#[derive(Debug, thiserror::Error)]
pub enum ExportDecodeError {
    #[error("the body of {path} is not an OTLP protobuf export request: {source}")]
    Protobuf {
        path: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("the body of {path} is not an OTLP JSON export request: {source}")]
    Json {
        path: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// How an OTLP/HTTP body is encoded (by its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpEncoding {
    /// `application/x-protobuf` (the default).
    Protobuf,
    /// `application/json`: OTLP's JSON mapping (hex ids, camelCase names).
    Json,
}

impl OtlpEncoding {
    /// The encoding a `Content-Type` names (protobuf unless it is JSON).
    pub fn of_content_type(content_type: Option<&str>) -> OtlpEncoding {
        match content_type {
            Some(t) if t.trim_start().starts_with("application/json") => OtlpEncoding::Json,
            _ => OtlpEncoding::Protobuf,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            OtlpEncoding::Protobuf => "application/x-protobuf",
            OtlpEncoding::Json => "application/json",
        }
    }
}

fn decode<T: prost::Message + Default + serde::de::DeserializeOwned>(
    path: &'static str,
    encoding: OtlpEncoding,
    body: &[u8],
) -> Result<T, ExportDecodeError> {
    match encoding {
        OtlpEncoding::Protobuf => {
            T::decode(body).map_err(|source| ExportDecodeError::Protobuf { path, source })
        }
        OtlpEncoding::Json => {
            serde_json::from_slice(body).map_err(|source| ExportDecodeError::Json { path, source })
        }
    }
}

fn encode<T: prost::Message + serde::Serialize>(encoding: OtlpEncoding, answer: &T) -> Vec<u8> {
    match encoding {
        OtlpEncoding::Protobuf => answer.encode_to_vec(),
        // Serializing plain data to a Vec cannot fail.
        OtlpEncoding::Json => serde_json::to_vec(answer).unwrap_or_default(),
    }
}

/// Publishes exported spans and logs into a hub (each to its own trace).
#[derive(Clone, Debug)]
pub struct OtlpReceiver {
    hub: Telemetry,
}

const REFUSED: &str = "records without a valid 16-byte trace id are dropped";

impl OtlpReceiver {
    pub fn new(hub: Telemetry) -> OtlpReceiver {
        OtlpReceiver { hub }
    }

    /// The gRPC collector services.
    pub fn grpc_services(&self) -> (TraceServiceServer<Self>, LogsServiceServer<Self>) {
        (
            TraceServiceServer::new(self.clone()),
            LogsServiceServer::new(self.clone()),
        )
    }

    fn traces(&self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse {
        let refused = self.hub.ingest_traces(TracesData {
            resource_spans: request.resource_spans,
        });
        ExportTraceServiceResponse {
            partial_success: (refused > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(refused).unwrap_or(i64::MAX),
                error_message: REFUSED.to_owned(),
            }),
        }
    }

    fn logs(&self, request: ExportLogsServiceRequest) -> ExportLogsServiceResponse {
        let refused = self.hub.ingest_logs(LogsData {
            resource_logs: request.resource_logs,
        });
        ExportLogsServiceResponse {
            partial_success: (refused > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: i64::try_from(refused).unwrap_or(i64::MAX),
                error_message: REFUSED.to_owned(),
            }),
        }
    }

    /// OTLP/HTTP: ingests `body` (encoded as `encoding`) POSTed to `path`
    /// ([`OTLP_TRACES_PATH`] or [`OTLP_LOGS_PATH`]) and returns the answer in the same
    /// encoding; `None` for another path.
    pub fn export_http(
        &self,
        path: &str,
        encoding: OtlpEncoding,
        body: &[u8],
    ) -> Option<Result<Vec<u8>, ExportDecodeError>> {
        match path {
            OTLP_TRACES_PATH => Some(
                decode(OTLP_TRACES_PATH, encoding, body)
                    .map(|request| encode(encoding, &self.traces(request))),
            ),
            OTLP_LOGS_PATH => Some(
                decode(OTLP_LOGS_PATH, encoding, body)
                    .map(|request| encode(encoding, &self.logs(request))),
            ),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl TraceService for OtlpReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.traces(request.into_inner())))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.logs(request.into_inner())))
    }
}

/// The environment that makes a program's OpenTelemetry SDK export to a receiver at
/// `127.0.0.1:port` (gRPC, the protocol the Dagger SDKs' exporters speak; the HTTP paths are
/// given for exporters that use them) under the span `parent`.
pub fn exporter_env(port: u16, parent: Option<crate::TraceParent>) -> Vec<(String, String)> {
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut env = vec![
        ("OTEL_TRACES_EXPORTER", "otlp".to_owned()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        ("OTEL_EXPORTER_OTLP_INSECURE", "true".to_owned()),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{endpoint}{OTLP_TRACES_PATH}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            format!("{endpoint}{OTLP_LOGS_PATH}"),
        ),
    ];
    if let Some(parent) = parent {
        env.push((crate::TraceParent::ENV, parent.to_string()));
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
