//! `/query`: GraphQL over HTTP, executed by `dagr-gql` on the engine's schema. Every answer is JSON,
//! failures included.

use dagr_gql::{Field, FieldError, Object, RequestData, Schema, Value};
use dagr_session::{RequestScope, ScopePolicy};
use http::StatusCode;

/// The engine's GraphQL schema and its execution.
pub struct QueryEngine {
    schema: Schema,
}

impl QueryEngine {
    pub fn new(engine_version: &'static str, min_client_version: semver::Version) -> QueryEngine {
        let policy = ScopePolicy { min_client_version };
        let query = Object::new("Query")
            .field(
                Field::new("version", "String!")
                    .description("The engine's version.")
                    .resolve_sync(move |_ctx| Ok(Value::leaf(engine_version))),
            )
            .field(
                Field::new("checkVersionCompatibility", "Boolean!")
                    .description("Whether a client of this version can use this engine; an error says why not.")
                    .arg(dagr_gql::Arg::new("version", "String!"))
                    .resolve_sync(move |ctx| {
                        let version: String = ctx.arg("version")?;
                        policy
                            .check_version(&version)
                            .map_err(|e| FieldError::new(e.to_string()))?;
                        Ok(Value::leaf(true))
                    }),
            );
        // The schema is fixed at compile time; failing to build it is a programming error that every
        // test of the engine catches.
        #[allow(clippy::expect_used)]
        let schema = Schema::build()
            .object(query)
            .finish()
            .expect("the engine schema is valid");
        QueryEngine { schema }
    }

    /// The schema as SDL.
    pub fn sdl(&self) -> String {
        self.schema.sdl()
    }

    /// Executes one request body; returns the status and the JSON answer.
    pub async fn execute(&self, scope: &RequestScope, body: &[u8]) -> (StatusCode, Vec<u8>) {
        let request: dagr_gql::Request = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                let err = serde_json::json!({
                    "errors": [{ "message": format!("the request body is not a GraphQL JSON request: {e}") }]
                });
                return (StatusCode::BAD_REQUEST, err.to_string().into_bytes());
            }
        };
        let data = RequestData::new().with(scope.clone());
        let response = self.schema.execute(request, data).await;
        let bytes = serde_json::to_vec(&response).unwrap_or_else(|e| {
            serde_json::json!({ "errors": [{ "message": format!("encoding the response failed: {e}") }] })
                .to_string()
                .into_bytes()
        });
        (StatusCode::OK, bytes)
    }
}
