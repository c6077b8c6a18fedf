//! `/query`: GraphQL over HTTP, executed by `dagr-gql` on the core API schema (`dagr-api`). Every
//! answer is JSON, failures included.

use std::sync::Arc;

use dagr_api::CoreApi;
use dagr_gql::Schema;
use dagr_session::RequestScope;
use http::StatusCode;

use crate::telemetry::EngineTelemetry;

/// The engine's GraphQL schema, the API services its resolvers use and where their spans go.
pub struct QueryEngine {
    schema: Schema,
    api: CoreApi,
    telemetry: Arc<EngineTelemetry>,
}

impl QueryEngine {
    /// The core API it serves.
    pub fn api(&self) -> &CoreApi {
        &self.api
    }

    pub fn new(api: CoreApi, telemetry: Arc<EngineTelemetry>) -> anyhow::Result<QueryEngine> {
        Ok(QueryEngine {
            schema: dagr_api::schema()?,
            api,
            telemetry,
        })
    }

    /// Executes one request body; returns the status and the JSON answer.
    /// The request's spans go under its `traceparent` (from `headers`), with the session's
    /// secrets scrubbed from them.
    pub async fn execute(
        &self,
        scope: &RequestScope,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> (StatusCode, Vec<u8>) {
        let request: dagr_gql::Request = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                let err = serde_json::json!({
                    "errors": [{ "message": format!("the request body is not a GraphQL JSON request: {e}") }]
                });
                return (StatusCode::BAD_REQUEST, err.to_string().into_bytes());
            }
        };
        let span = self
            .telemetry
            .request_span(scope, headers)
            .with_scrubber(self.api.scrubber(scope.session().id()));
        // A client that serves modules sees the schema extended with theirs.
        let schema = match self.api.schema_for(&scope.client_ref(), &self.schema) {
            Ok(schema) => schema,
            Err(e) => {
                let err = serde_json::json!({ "errors": [{ "message": e.message }] });
                return (StatusCode::OK, err.to_string().into_bytes());
            }
        };
        let response = schema
            .execute(request, self.api.request_data(scope.client_ref(), span))
            .await;
        let bytes = serde_json::to_vec(&response).unwrap_or_else(|e| {
            serde_json::json!({ "errors": [{ "message": format!("encoding the response failed: {e}") }] })
                .to_string()
                .into_bytes()
        });
        (StatusCode::OK, bytes)
    }
}
