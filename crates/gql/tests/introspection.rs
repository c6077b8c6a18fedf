//! Both standard introspection queries, checked with graphql-core 3.2.3 (as used by the Python SDK).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::json;

/// The shared venv of the Python tests (the Dagger SDK pins include graphql-core 3.2.3).
fn python() -> &'static Path {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        dagr_testkit::python::venv(
            env!("CARGO_TARGET_TMPDIR"),
            "dagger-sdk-0.11.8",
            dagr_testkit::python::DAGGER_SDK_REQUIREMENTS,
        )
    })
}

fn py(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const CHECK: &str = r#"
import json, sys
from graphql import build_client_schema, build_schema, print_schema, validate, parse, get_introspection_query
result = json.load(open(sys.argv[1]))
assert "errors" not in result, result.get("errors")
client = build_client_schema(result["data"])
from_sdl = build_schema(open(sys.argv[2]).read())
if sys.argv[4] == "signatures":
    from graphql import lexicographic_sort_schema
    client, from_sdl = lexicographic_sort_schema(client), lexicographic_sort_schema(from_sdl)
a, b = print_schema(client), print_schema(from_sdl)
if sys.argv[4] == "signatures":
    # Compare signatures only: order-insensitive, descriptions dropped.
    import re
    strip = lambda text: re.sub(r'\n\n+', '\n', re.sub(r'[ ]*"""(?:.|\n)*?"""\n', '', text))
    a, b = strip(a), strip(b)
if sys.argv[3] == "standard":
    # The standard query asks neither deprecated input values nor specifiedByURL.
    import re
    b = re.sub(r' @specifiedBy\(url: "[^"]*"\)', "", b)
    b = b.replace('\n  legacy: String @deprecated(reason: "Unused.")', "")
if a != b:
    import difflib
    sys.stderr.write("\n".join(difflib.unified_diff(b.splitlines(), a.splitlines(), "sdl", "introspection", lineterm="")))
    sys.exit(1)
# What the SDK does next: validate its queries against the downloaded schema.
for q in sys.argv[5:]:
    errs = validate(client, parse(q))
    assert not errs, errs
print(a)
"#;

async fn check(query_script: &str, mode: &str) -> String {
    let schema = common::schema();
    let sdl = schema.sdl();
    check_schema(&schema, &sdl, query_script, mode, "ordered").await
}

/// Runs the introspection query printed by `query_script` and compares, with graphql-core, the
/// schema it describes to `sdl` (`order`: "ordered" compares printed schemas as they are,
/// "signatures" sorts both and drops descriptions).
async fn check_schema(
    schema: &dagr_gql::Schema,
    sdl: &str,
    query_script: &str,
    mode: &str,
    order: &str,
) -> String {
    let query = py(query_script, &[]);
    let response = common::run_json(schema, &query, json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let result_path = dir.path().join("result.json");
    let sdl_path = dir.path().join("schema.graphql");
    std::fs::write(&result_path, serde_json::to_vec(&response).unwrap()).unwrap();
    std::fs::write(&sdl_path, sdl).unwrap();
    let mut args = vec![
        result_path.to_str().unwrap(),
        sdl_path.to_str().unwrap(),
        mode,
        order,
    ];
    args.extend(sdk_queries(schema));
    py(CHECK, &args)
}

#[tokio::test]
async fn graphql_core_standard_introspection_query() {
    let printed = check(
        "from graphql import get_introspection_query; print(get_introspection_query())",
        "standard",
    )
    .await;
    assert!(printed.contains("type Container"), "{printed}");
    assert!(printed.contains("withExec(\n    \"\"\"Command to run.\"\"\"\n    args: [String!]!\n    stdin: String = \"\"\n    protocol: NetworkProtocol = TCP\n  ): Container!"), "{printed}");
    assert!(
        printed.contains("old: String @deprecated(reason: \"Use `version` instead.\")"),
        "{printed}"
    );
    assert!(
        printed.contains("loadContainerFromID(id: ContainerID!): Container!"),
        "{printed}"
    );
}

#[tokio::test]
async fn graphql_core_newer_introspection_query() {
    let printed = check(
        "from graphql import get_introspection_query; print(get_introspection_query(descriptions=True, specified_by_url=True, directive_is_repeatable=True, schema_description=True, input_value_deprecation=True))",
        "full",
    )
    .await;
    assert!(
        printed.contains("legacy: String @deprecated(reason: \"Unused.\")"),
        "{printed}"
    );
    assert!(
        printed.contains("scalar URL @specifiedBy(url: \"https://url.spec.whatwg.org/\")"),
        "{printed}"
    );
}

#[tokio::test]
async fn one_of_and_type_lookups_answer() {
    let schema = common::schema();
    let data = common::ok_data(
        common::run(
            &schema,
            r#"{ input: __type(name: "BuildArg") { kind isOneOf inputFields { name defaultValue } }
                 missing: __type(name: "Nope") { name }
                 list: __type(name: "Container") { fields(includeDeprecated: true) { name type { kind ofType { kind ofType { name } } } } } }"#,
            json!({}),
        )
        .await,
    );
    assert_eq!(data["input"]["kind"], "INPUT_OBJECT");
    assert_eq!(data["input"]["isOneOf"], false);
    assert_eq!(
        data["input"]["inputFields"][1],
        json!({"name": "value", "defaultValue": "\"\""})
    );
    assert_eq!(data["missing"], json!(null));
    let fields = data["list"]["fields"].as_array().unwrap();
    assert_eq!(fields[0]["name"], "id");
    let args = fields.iter().find(|f| f["name"] == "args").unwrap();
    assert_eq!(
        args["type"],
        json!({"kind": "NON_NULL", "ofType": {"kind": "LIST", "ofType": {"name": null}}})
    );
}

#[test]
fn sdl_parses_with_graphql_parser() {
    let schema = common::schema();
    let sdl = schema.sdl();
    graphql_parser::parse_schema::<String>(&sdl).unwrap();
    assert!(sdl.contains("scalar ContainerID"));
    assert!(sdl.contains("directive @impure(reason: String!) on FIELD_DEFINITION"));
    assert!(!sdl.contains("__Type"));
}

/// Queries an SDK would send, for whichever schema is checked.
fn sdk_queries(schema: &dagr_gql::Schema) -> Vec<&'static str> {
    if schema.sdl().contains("type Host {") {
        vec![
            r#"{ container { from(address: "alpine") { withExec(args: ["echo", "hi"]) { stdout } } } }"#,
            r#"query($id: DirectoryID!) { container { withMountedCache(path: "/c", cache: "x", sharing: LOCKED) { withDirectory(path: "/src", directory: $id) { sync } } } }"#,
            r#"{ host { directory(path: ".", exclude: ["target"]) { entries } } }"#,
        ]
    } else {
        vec![
            r#"{ container { withExec(args: ["a"]) { id stdin: args } } }"#,
            r#"{ echo(e: UDP, input: {name: "x"}) }"#,
        ]
    }
}

fn core_api() -> (dagr_gql::Schema, String) {
    common::core_api::core_api(|_, _| None)
}

#[tokio::test]
async fn core_api_signatures_survive_both_introspection_queries() {
    let (schema, sdl) = core_api();
    check_schema(
        &schema,
        &sdl,
        "from graphql import get_introspection_query; print(get_introspection_query())",
        "standard",
        "signatures",
    )
    .await;
    check_schema(
        &schema,
        &sdl,
        "from graphql import get_introspection_query; print(get_introspection_query(descriptions=True, specified_by_url=True, directive_is_repeatable=True, schema_description=True, input_value_deprecation=True))",
        "full",
        "signatures",
    )
    .await;
}

#[tokio::test]
async fn core_api_queries_validate_and_reach_resolvers() {
    let (schema, _) = core_api();
    for query in sdk_queries(&schema) {
        let variables = json!({"id": "eyJ4IjoxfQ=="});
        let r = common::run(&schema, query, variables).await;
        // Validation passed: the only errors come from resolvers (or from loading the fake ID).
        assert!(r.data.is_some(), "{query}: {:?}", r.errors);
        assert!(!r.errors.is_empty());
        for e in &r.errors {
            assert!(!e.path.is_empty(), "{query}: {e:?}");
        }
    }
}
