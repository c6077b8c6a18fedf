//! The gRPC services served on the API listeners next to HTTP: `grpc.health.v1.Health`, the
//! engine's `Info` call and the telemetry subscriptions (see `telemetry.rs`).

use tonic::{Request, Response, Status};

pub mod proto {
    tonic::include_proto!("dagr.engine.v1");
}

use proto::info_server::{Info, InfoServer};
use proto::{GetInfoRequest, GetInfoResponse};

pub const ENGINE_NAME: &str = "dagr-engine";

struct InfoService {
    min_client_version: String,
}

#[tonic::async_trait]
impl Info for InfoService {
    async fn get_info(
        &self,
        _req: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        Ok(Response::new(GetInfoResponse {
            name: ENGINE_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            min_client_version: self.min_client_version.clone(),
        }))
    }
}

/// The gRPC routes: health (the whole engine reports SERVING while it accepts work), Info and
/// the telemetry subscriptions.
pub async fn routes(
    min_client_version: &semver::Version,
    telemetry: &std::sync::Arc<crate::telemetry::EngineTelemetry>,
    otlp: &dagr_telemetry::OtlpReceiver,
) -> tonic::service::Routes {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<InfoServer<InfoService>>().await;
    let (traces, logs, metrics) = telemetry.services();
    let (otlp_traces, otlp_logs) = otlp.grpc_services();
    tonic::service::Routes::new(health)
        .add_service(InfoServer::new(InfoService {
            min_client_version: min_client_version.to_string(),
        }))
        .add_service(traces)
        .add_service(logs)
        .add_service(metrics)
        .add_service(otlp_traces)
        .add_service(otlp_logs)
}
