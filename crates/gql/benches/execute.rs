//! Executing small queries over a small schema: the parsed document comes from the schema's
//! cache, so this measures validation-free execution, a chain of object fields with IDs, and
//! loading an ID (replay).
#![allow(clippy::unwrap_used)] // benches may unwrap

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use dagr_gql::{Arg, Field, Object, Request, RequestData, Schema, Value};
use serde_json::json;

#[derive(Clone, Default)]
struct Container {
    args: Vec<String>,
}

fn schema() -> Schema {
    Schema::build()
        .object(
            Object::new("Query")
                .field(
                    Field::new("version", "String!").resolve_sync(|_| Ok(Value::leaf("v0.11.8"))),
                )
                .field(Field::new("container", "Container!").resolve_sync(|_| {
                    Ok(Value::object("Container", Arc::new(Container::default())))
                })),
        )
        .object(
            Object::new("Container")
                .with_id()
                .field(
                    Field::new("withExec", "Container!")
                        .arg(Arg::new("args", "[String!]!"))
                        .resolve_sync(|ctx| {
                            let mut next = ctx.parent::<Container>()?.clone();
                            next.args.extend(ctx.arg::<Vec<String>>("args")?);
                            Ok(Value::object("Container", Arc::new(next)))
                        }),
                )
                .field(Field::new("args", "[String!]!").resolve_sync(|ctx| {
                    Ok(Value::leaf_list(ctx.parent::<Container>()?.args.clone()))
                })),
        )
        .finish()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let schema = schema();
    c.bench_function("cached_version_query", |b| {
        b.to_async(&rt).iter(|| async {
            let r = schema
                .execute(Request::new("{ version }"), RequestData::new())
                .await;
            black_box(r)
        })
    });
    let chain = r#"{ container { withExec(args: ["a"]) { withExec(args: ["b", "c"]) { withExec(args: "d") { id args } } } } }"#;
    c.bench_function("cached_chain_of_three_with_id", |b| {
        b.to_async(&rt).iter(|| async {
            let r = schema
                .execute(Request::new(chain), RequestData::new())
                .await;
            black_box(r)
        })
    });
    let id = rt.block_on(async {
        let r = schema
            .execute(Request::new(chain), RequestData::new())
            .await;
        r.data.unwrap()["container"]["withExec"]["withExec"]["withExec"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    });
    let load = "query($id: ContainerID!) { loadContainerFromID(id: $id) { args } }";
    c.bench_function("load_id_of_chain_of_four", |b| {
        b.to_async(&rt).iter(|| async {
            let request = Request::new(load).variables(json!({"id": id}));
            black_box(schema.execute(request, RequestData::new()).await)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
