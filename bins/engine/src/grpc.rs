//! The gRPC services served on the API listeners next to HTTP: `grpc.health.v1.Health` and the
//! engine's `Info` call.

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

/// The gRPC routes: health (the whole engine reports SERVING while it accepts work) and Info.
pub async fn routes(min_client_version: &semver::Version) -> tonic::service::Routes {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<InfoServer<InfoService>>().await;
    tonic::service::Routes::new(health).add_service(InfoServer::new(InfoService {
        min_client_version: min_client_version.to_string(),
    }))
}
