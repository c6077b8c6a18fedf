//! Execution behaviour: concurrency of siblings, limits, document cache, deep queries.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Gate, ok_data, run};
use dagr_gql::{Limits, Request, RequestData};
use serde_json::json;

#[tokio::test]
async fn sibling_fields_run_concurrently() {
    // Each resolver waits for the other: run one after the other, this would never finish.
    let schema = common::schema();
    let data = RequestData::new().with(Gate(tokio::sync::Barrier::new(2)));
    let fut = schema.execute(Request::new("{ barrierB barrierA }"), data);
    let response = tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("siblings deadlocked");
    assert_eq!(ok_data(response), json!({"barrierB": "b", "barrierA": "a"}));
}

#[tokio::test]
async fn list_items_run_concurrently() {
    // Same through a fragment on both sides of a list of the same root.
    let schema = common::schema();
    let data = RequestData::new().with(Gate(tokio::sync::Barrier::new(4)));
    let fut = schema.execute(
        Request::new("{ a: barrierA b: barrierB c: barrierA d: barrierB }"),
        data,
    );
    let response = tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("siblings deadlocked");
    assert_eq!(
        ok_data(response),
        json!({"a": "a", "b": "b", "c": "a", "d": "b"})
    );
}

fn small_limits() -> Limits {
    Limits {
        max_document_bytes: 300,
        max_depth: 4,
        max_aliases: 2,
        max_fields: 6,
        max_cached_documents: 4,
        max_cached_document_bytes: 1024,
    }
}

#[tokio::test]
async fn document_size_limit() {
    let schema = common::schema_with(small_limits());
    let query = format!("{{ version {} }}", " ".repeat(300));
    let r = run(&schema, &query, json!({})).await;
    assert_eq!(r.data, None);
    assert_eq!(
        r.errors[0].message,
        "query document is 312 bytes, more than the limit of 300 bytes"
    );
}

#[tokio::test]
async fn depth_limit_counts_fragments() {
    let schema = common::schema_with(small_limits());
    let ok = run(&schema, "{ deep { inner { inner { level } } } }", json!({})).await;
    assert!(ok.errors.is_empty(), "{:?}", ok.errors);
    let too_deep = run(
        &schema,
        "{ deep { inner { inner { inner { level } } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        too_deep.errors[0].message,
        "syntax error at 1:32: document nested deeper than 4 selection sets"
    );
    let via_fragment = run(
        &schema,
        "{ deep { inner { ...F } } } fragment F on Deep { inner { inner { level } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        via_fragment.errors[0].message,
        "query is nested deeper than the limit of 4"
    );
}

#[tokio::test]
async fn alias_and_field_limits() {
    let schema = common::schema_with(small_limits());
    let r = run(&schema, "{ a: version b: version c: version }", json!({})).await;
    assert_eq!(
        r.errors[0].message,
        "query uses 3 aliases, more than the limit of 2"
    );
    // Fragments multiply: F has 2 fields spread 4 times = 8 > 6.
    let r = run(&schema, "{ ...F deep { ...G ...G } } fragment G on Deep { level maybe } fragment F on Query { version }", json!({})).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let r = run(
        &schema,
        "{ deep { ...G inner { ...G inner { ...G } } } } fragment G on Deep { level maybe }",
        json!({}),
    )
    .await;
    assert_eq!(
        r.errors[0].message,
        "query selects more than the limit of 6 fields"
    );
}

#[tokio::test]
async fn fragment_fan_out_does_not_explode() {
    // F0 spreads F1 twice, F1 spreads F2 twice, ...: 2^40 expansions if expanded naively.
    let mut query = String::from("{ ...F0 }");
    for i in 0..40 {
        query.push_str(&format!(
            " fragment F{i} on Query {{ ...F{} ...F{} }}",
            i + 1,
            i + 1
        ));
    }
    query.push_str(" fragment F40 on Query { version }");
    let schema = common::schema();
    let r = tokio::time::timeout(Duration::from_secs(60), run(&schema, &query, json!({})))
        .await
        .expect("validation of a fragment fan-out hung");
    assert_eq!(ok_data(r), json!({"version": "v0.11.8"}));
    // The same fan-out through fields is stopped by the field limit.
    let mut query = String::from("{ deep { ...G0 } }");
    for i in 0..40 {
        query.push_str(&format!(
            " fragment G{i} on Deep {{ a: inner {{ ...G{} }} b: inner {{ ...G{} }} }}",
            i + 1,
            i + 1
        ));
    }
    query.push_str(" fragment G40 on Deep { level }");
    let r = tokio::time::timeout(Duration::from_secs(60), run(&schema, &query, json!({})))
        .await
        .expect("validation of a field fan-out hung");
    assert_eq!(
        r.errors[0].message,
        "query selects more than the limit of 50000 fields"
    );
}

#[tokio::test]
async fn bracket_bombs_are_rejected_while_parsing() {
    let schema = common::schema();
    let query = format!("{}{}", "{a".repeat(200_000), "}".repeat(200_000));
    let r = run(&schema, &query, json!({})).await;
    assert_eq!(
        r.errors[0].message,
        "syntax error at 1:401: document nested deeper than 200 selection sets"
    );
    let list_bomb = format!(
        "{{ echo(json: {}1{}) }}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = run(&schema, &list_bomb, json!({})).await;
    assert_eq!(
        r.errors[0].message,
        "syntax error at 1:77: value nested deeper than 64 brackets"
    );
    // Brackets inside strings and comments do not count.
    let quoted = format!(
        "{{ echo(s: \"{}\") # {}\n }}",
        "{".repeat(10_000),
        "[".repeat(10_000)
    );
    let r = run(&schema, &quoted, json!({})).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn queries_at_the_default_depth_limit_run_on_a_small_stack() {
    // A chain as deep as the default limit allows, parsed, validated and executed on a thread with
    // a 2 MiB stack (the size of tokio's worker threads).
    let depth = Limits::default().max_depth;
    let query = format!(
        "{{ deep {}{{ level }}{} }}",
        "{ inner ".repeat(depth - 2),
        " }".repeat(depth - 2)
    );
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let schema = common::schema();
                run(&schema, &query, json!({})).await
            })
        })
        .unwrap();
    let response = handle.join().unwrap();
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    let mut node = &response.data.unwrap()["deep"];
    let mut levels = 0;
    while node.get("inner").is_some() {
        node = &node["inner"];
        levels += 1;
    }
    assert_eq!(node["level"], json!(levels));
    assert_eq!(levels, depth - 2);
}

#[tokio::test]
async fn cached_documents_run_with_new_variables() {
    let schema = common::schema_with(Limits {
        max_cached_documents: 1,
        ..Limits::default()
    });
    let q = "query($n: Int) { echo(n: $n) }";
    for n in 0..3 {
        let data = ok_data(run(&schema, q, json!({"n": n})).await);
        assert_eq!(data["echo"]["n"], json!(n));
        // Another document evicts the first one; answers stay right.
        ok_data(run(&schema, "{ version }", json!({})).await);
    }
    // Invalid documents are answered every time (never cached as valid).
    for _ in 0..2 {
        let r = run(&schema, "{ nope }", json!({})).await;
        assert_eq!(r.errors.len(), 1);
    }
}

#[test]
fn execute_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let schema = common::schema();
    let fut = schema.execute(Request::new("{ version }"), RequestData::new());
    assert_send(&fut);
    let schema: std::sync::Arc<dyn Send + Sync> = std::sync::Arc::new(common::schema());
    drop(schema);
}

#[tokio::test]
async fn raw_bodies_always_answer_json() {
    let schema = common::schema();
    let ok = schema
        .execute_body(br#"{"query":"query Q($v: String!) { checkVersionCompatibility(version: $v) }","variables":{"v":"v0.11.0"},"operationName":"Q"}"#, RequestData::new())
        .await;
    assert_eq!(
        ok.to_json(),
        json!({"data": {"checkVersionCompatibility": true}})
    );
    let bad = schema.execute_body(b"{not json", RequestData::new()).await;
    assert_eq!(bad.data, None);
    assert!(
        bad.errors[0].message.starts_with("invalid request body: "),
        "{:?}",
        bad.errors
    );
    let no_query = schema
        .execute_body(br#"{"variables":{}}"#, RequestData::new())
        .await;
    assert_eq!(
        no_query.errors[0].message,
        "invalid request body: missing field `query` at line 1 column 16"
    );
}
