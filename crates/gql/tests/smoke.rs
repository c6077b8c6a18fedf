#![allow(clippy::unwrap_used)]

use dagr_gql::{Arg, Field, Object, Request, RequestData, Schema, Value};
use serde_json::json;

fn schema() -> Schema {
    Schema::build()
        .object(
            Object::new("Query")
                .field(
                    Field::new("version", "String!").resolve_sync(|_| Ok(Value::leaf("v0.11.8"))),
                )
                .field(
                    Field::new("checkVersionCompatibility", "Boolean!")
                        .arg(Arg::new("version", "String!"))
                        .resolve_sync(|ctx| {
                            let v: String = ctx.arg("version")?;
                            Ok(Value::leaf(v.starts_with("v0.11")))
                        }),
                ),
        )
        .finish()
        .unwrap()
}

#[tokio::test]
async fn version_and_typename() {
    let s = schema();
    let r = s
        .execute(
            Request::new(
                "{ __typename version ok: checkVersionCompatibility(version: \"v0.11.2\") }",
            ),
            RequestData::new(),
        )
        .await;
    assert_eq!(
        r.to_json(),
        json!({"data": {"__typename": "Query", "version": "v0.11.8", "ok": true}})
    );
}

#[tokio::test]
async fn introspection_lists_query() {
    let s = schema();
    let r = s
        .execute(
            Request::new("{ __schema { queryType { name } types { name kind } } __type(name: \"Query\") { fields { name args { name defaultValue type { kind ofType { name } } } } } }"),
            RequestData::new(),
        )
        .await;
    assert!(r.is_ok(), "{:?}", r.errors);
    let data = r.data.unwrap();
    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
    let fields = &data["__type"]["fields"];
    assert_eq!(fields[0]["name"], "version");
    assert_eq!(fields[1]["args"][0]["type"]["kind"], "NON_NULL");
    assert_eq!(fields.as_array().unwrap().len(), 2);
}
