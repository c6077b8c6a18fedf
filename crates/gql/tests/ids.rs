//! Call-chain IDs: determinism, replay, type checks, sensitive arguments, list items.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use base64::Engine as _;
use common::{Counters, ok_data, run};
use dagr_gql::{CallArg, CallChain, Request, RequestData};
use serde_json::json;

async fn id_of(query: &str, variables: serde_json::Value) -> String {
    let schema = common::schema();
    let data = ok_data(run(&schema, query, variables).await);
    // The ID is the only leaf at the end of the single path.
    let mut node = &data;
    while let Some(obj) = node.as_object() {
        node = obj.values().next().unwrap();
    }
    node.as_str().unwrap().to_string()
}

#[tokio::test]
async fn same_chain_gives_same_id_byte_for_byte() {
    let base = id_of(
        r#"{ container { withExec(args: ["echo", "hi"], stdin: "x") { id } } }"#,
        json!({}),
    )
    .await;
    let reordered = id_of(
        r#"{ container { withExec(stdin: "x", args: ["echo", "hi"]) { id } } }"#,
        json!({}),
    )
    .await;
    let variables = id_of(
        r#"query($a: [String!]!, $s: String) { c: container { w: withExec(args: $a, stdin: $s) { id } } }"#,
        json!({"a": ["echo", "hi"], "s": "x"}),
    )
    .await;
    let explicit_default = id_of(
        r#"{ container { withExec(args: ["echo", "hi"], stdin: "x", protocol: TCP) { id } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(base, reordered);
    assert_eq!(base, variables);
    assert_eq!(base, explicit_default);
    let different = id_of(
        r#"{ container { withExec(args: ["echo", "hi"], stdin: "x", protocol: UDP) { id } } }"#,
        json!({}),
    )
    .await;
    assert_ne!(base, different);
    let other_args = id_of(
        r#"{ container { withExec(args: ["echo"], stdin: "x") { id } } }"#,
        json!({}),
    )
    .await;
    assert_ne!(base, other_args);
    // A single value coerced into a list is the same as the one-element list.
    let single = id_of(
        r#"{ container { withExec(args: "echo", stdin: "x") { id } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(single, other_args);
    // Chain contents: defaults are omitted, arguments sorted.
    let chain = CallChain::decode(&base).unwrap();
    let calls = chain.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].field, "container");
    assert!(calls[0].args.is_empty());
    assert_eq!(calls[1].field, "withExec");
    let names: Vec<&str> = calls[1].args.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["args", "stdin"]);
    assert_eq!(chain.type_name(), Some("Container"));
}

#[tokio::test]
async fn load_replays_the_chain() {
    let schema = common::schema();
    let id = id_of(r#"{ container(platform: "linux/arm64") { withExec(args: ["a", "b"]) { withExec(args: "c") { id } } } }"#, json!({})).await;
    let counters = Counters::default();
    let request = Request::new("query($id: ContainerID!) { loadContainerFromID(id: $id) { id platform args } c: container(id: $id) { args } }")
        .variables(json!({"id": id}));
    let response = schema
        .execute(request, RequestData::new().with(counters.clone()))
        .await;
    let data = ok_data(response);
    assert_eq!(
        data["loadContainerFromID"]["id"],
        json!(id),
        "a loaded object keeps its ID"
    );
    assert_eq!(data["loadContainerFromID"]["platform"], "linux/arm64");
    assert_eq!(data["loadContainerFromID"]["args"], json!(["a", "b", "c"]));
    assert_eq!(data["c"]["args"], json!(["a", "b", "c"]));
    // Two withExec calls in the chain, the ID used twice: replayed once per request.
    assert_eq!(counters.with_exec.load(Ordering::SeqCst), 2);

    // Inline literal IDs work too.
    let query = format!(
        r#"{{ a: loadContainerFromID(id: "{id}") {{ args }} b: container(id: "{id}") {{ platform }} }}"#
    );
    let data = ok_data(
        schema
            .execute(Request::new(query), RequestData::new())
            .await,
    );
    assert_eq!(
        data,
        json!({"a": {"args": ["a", "b", "c"]}, "b": {"platform": "linux/arm64"}})
    );
}

#[tokio::test]
async fn wrong_type_and_garbage_ids_error_clearly() {
    let schema = common::schema();
    let ctr_id = id_of(r#"{ container { id } }"#, json!({})).await;
    let r = run(
        &schema,
        "query($id: MountID!) { loadMountFromID(id: $id) { path } }",
        json!({"id": ctr_id}),
    )
    .await;
    assert_eq!(r.data, Some(json!(null)));
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].message, "expected Mount ID, got Container ID");
    assert_eq!(
        r.errors[0].path,
        vec![dagr_gql::PathSegment::Key("loadMountFromID".into())]
    );

    let r = run(
        &schema,
        r#"{ loadContainerFromID(id: "not base64!") { args } }"#,
        json!({}),
    )
    .await;
    assert!(
        r.errors[0].message.starts_with("invalid ID"),
        "{}",
        r.errors[0].message
    );

    let forged =
        base64::engine::general_purpose::STANDARD.encode(r#"[{"f":"nope","t":"Container"}]"#);
    let r = run(
        &schema,
        "query($id: ContainerID!) { loadContainerFromID(id: $id) { args } }",
        json!({"id": forged}),
    )
    .await;
    assert_eq!(
        r.errors[0].message,
        "invalid ID: type Query has no field nope"
    );
}

#[tokio::test]
async fn sensitive_arguments_never_enter_ids() {
    let schema = common::schema();
    let data = ok_data(
        run(
            &schema,
            r#"{ container { withSecret(plaintext: "hunter2") { id secret } } }"#,
            json!({}),
        )
        .await,
    );
    let id = data["container"]["withSecret"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(data["container"]["withSecret"]["secret"], "hunter2");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&id)
        .unwrap();
    assert!(!String::from_utf8(decoded).unwrap().contains("hunter2"));
    let chain = CallChain::decode(&id).unwrap();
    let digest = dagr_gql::ArgValue::String("hunter2".into()).redaction_digest();
    assert_eq!(
        chain.calls()[1].args,
        vec![("plaintext".to_string(), CallArg::Redacted(digest.clone()))]
    );
    // Replay: the resolver learns only the digest.
    let data = ok_data(
        run(
            &schema,
            "query($id: ContainerID!) { loadContainerFromID(id: $id) { secret id } }",
            json!({"id": id}),
        )
        .await,
    );
    assert_eq!(
        data["loadContainerFromID"]["secret"],
        json!(format!("redacted:{digest}"))
    );
    assert_eq!(data["loadContainerFromID"]["id"], json!(id));
}

#[tokio::test]
async fn id_arguments_receive_loaded_objects_and_nest() {
    let schema = common::schema();
    let src = id_of(
        r#"{ container { withExec(args: ["make"]) { id } } }"#,
        json!({}),
    )
    .await;
    let data = ok_data(
        run(
            &schema,
            r#"query($src: ContainerID!) { container { withDirectory(path: "/src", directory: $src) {
                 withMounts(sources: [$src, $src]) { id mounts { id path } } } } }"#,
            json!({"src": src}),
        )
        .await,
    );
    let node = &data["container"]["withDirectory"]["withMounts"];
    assert_eq!(node["mounts"][0]["path"], "/src:make");
    assert_eq!(node["mounts"][2]["path"], "make");
    // The outer ID embeds the argument's chain; loading it replays the nested chain too.
    let outer = node["id"].as_str().unwrap();
    let data = ok_data(
        run(
            &schema,
            "query($id: ContainerID!) { loadContainerFromID(id: $id) { mounts { path } } }",
            json!({"id": outer}),
        )
        .await,
    );
    assert_eq!(data["loadContainerFromID"]["mounts"][1]["path"], "make");
    // List items get their own IDs (with their index) and load back individually.
    let mount_id = node["mounts"][0]["id"].as_str().unwrap();
    let chain = CallChain::decode(mount_id).unwrap();
    assert_eq!(chain.last().unwrap().nth, Some(1));
    let data = ok_data(
        run(
            &schema,
            "query($id: MountID!) { loadMountFromID(id: $id) { path id } }",
            json!({"id": mount_id}),
        )
        .await,
    );
    assert_eq!(
        data["loadMountFromID"],
        json!({"path": "/src:make", "id": mount_id})
    );
}

#[tokio::test]
async fn resolvers_see_their_chain() {
    let schema = common::schema();
    let data = ok_data(
        run(
            &schema,
            r#"{ container { withExec(args: "x") { sync chainDigest id } } }"#,
            json!({}),
        )
        .await,
    );
    let node = &data["container"]["withExec"];
    assert_eq!(node["sync"], node["id"]);
    let chain = CallChain::decode(node["id"].as_str().unwrap()).unwrap();
    assert_eq!(node["chainDigest"], json!(chain.digest()));
    // An object returned with an existing chain keeps that chain's ID.
    let data = ok_data(
        run(
            &schema,
            r#"{ container { withExec(args: "x") { id self { id self { id } } } } }"#,
            json!({}),
        )
        .await,
    );
    let node = &data["container"]["withExec"];
    assert_eq!(node["self"]["id"], node["id"]);
    assert_eq!(node["self"]["self"]["id"], node["id"]);
}
