//! Data-driven: queries over the test schema and the exact JSON they must answer.
#![allow(clippy::unwrap_used)]

mod common;

use serde_json::{Value as Json, json};

struct Case {
    name: &'static str,
    query: &'static str,
    variables: Json,
    expected: Json,
}

fn case(name: &'static str, query: &'static str, variables: Json, expected: Json) -> Case {
    Case {
        name,
        query,
        variables,
        expected,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // --- execution ---
        case(
            "typename and version",
            "{ __typename version }",
            json!({}),
            json!({"data": {"__typename": "Query", "version": "v0.11.8"}}),
        ),
        case(
            "aliases keep query order",
            "{ z: version a: __typename m: checkVersionCompatibility(version: \"v0.11.1\") }",
            json!({}),
            json!({"data": {"z": "v0.11.8", "a": "Query", "m": true}}),
        ),
        case(
            "comma-less arguments",
            "{ echo(s: \"x\" n: 3) }",
            json!({}),
            json!({"data": {"echo": {"s": "x", "n": 3, "list": [], "e": "TCP"}}}),
        ),
        case(
            "defaults and coercion",
            "{ echo(f: 2, list: \"one\", e: UDP, input: {name: \"k\"}) }",
            json!({}),
            json!({"data": {"echo": {"s": "hi", "f": 2.0, "list": ["one"], "e": "UDP", "input": {"name": "k", "value": ""}}}}),
        ),
        case(
            "variables and variable defaults",
            "query Q($s: String = \"dv\", $n: Int, $e: NetworkProtocol!, $in: BuildArg) { echo(s: $s, n: $n, e: $e, input: $in) }",
            json!({"e": "UDP", "in": {"name": "a", "value": "b"}}),
            json!({"data": {"echo": {"s": "dv", "list": [], "e": "UDP", "input": {"name": "a", "value": "b"}}}}),
        ),
        case(
            "int variable into float",
            "query($f: Float) { echo(f: $f) }",
            json!({"f": 3}),
            json!({"data": {"echo": {"s": "hi", "f": 3.0, "list": [], "e": "TCP"}}}),
        ),
        case(
            "variables inside lists and input objects",
            "query($a: String!, $b: String!) { echo(list: [$a, \"x\"], input: {name: $b}) labels(labels: [{name: $a, value: $b}]) }",
            json!({"a": "A", "b": "B"}),
            json!({"data": {"echo": {"s": "hi", "list": ["A", "x"], "e": "TCP", "input": {"name": "B", "value": ""}}, "labels": ["\"A\"=\"B\""]}}),
        ),
        case(
            "custom scalar takes any JSON",
            "query($j: JSON) { a: echo(json: {k: [1, 2.5, \"s\", true, null]}) b: echo(json: $j) }",
            json!({"j": {"deep": [1]}}),
            json!({"data": {"a": {"s": "hi", "list": [], "e": "TCP", "json": {"k": [1, 2.5, "s", true, null]}}, "b": {"s": "hi", "list": [], "e": "TCP", "json": {"deep": [1]}}}}),
        ),
        case(
            "fragments and inline fragments",
            "query { ...F ... on Query { v2: version } ... { __typename } } fragment F on Query { version }",
            json!({}),
            json!({"data": {"version": "v0.11.8", "v2": "v0.11.8", "__typename": "Query"}}),
        ),
        case(
            "field merging of same response key",
            "{ container { args } container { platform } ... on Query { container { args } } }",
            json!({}),
            json!({"data": {"container": {"args": [], "platform": "linux/amd64"}}}),
        ),
        case(
            "skip and include",
            "query($t: Boolean!) { a: version @skip(if: true) b: version @include(if: $t) c: version @include(if: false) ...F @skip(if: $t) } fragment F on Query { d: version }",
            json!({"t": true}),
            json!({"data": {"b": "v0.11.8"}}),
        ),
        case(
            "operation selection by name",
            "query A { a: version } query B { b: version }",
            json!({"operationName": "B"}),
            json!({"data": {"b": "v0.11.8"}}),
        ),
        case(
            "exec error extensions",
            "{ execError }",
            json!({}),
            json!({"data": {"execError": null}, "errors": [{"message": "process \"false\" did not complete successfully: exit code: 1", "locations": [{"line": 1, "column": 3}], "path": ["execError"],
                "extensions": {"_type": "EXEC_ERROR", "cmd": ["false"], "exitCode": 1, "stdout": "", "stderr": "boom"}}]}),
        ),
        case(
            "nullable field error",
            "{ version nullableFail }",
            json!({}),
            json!({"data": {"version": "v0.11.8", "nullableFail": null}, "errors": [{"message": "nullable failure", "locations": [{"line": 1, "column": 11}], "path": ["nullableFail"]}]}),
        ),
        case(
            "non-null root error nulls data",
            "{ version nonNullFail }",
            json!({}),
            json!({"data": null, "errors": [{"message": "non-null failure", "locations": [{"line": 1, "column": 11}], "path": ["nonNullFail"]}]}),
        ),
        case(
            "null from non-null resolver",
            "{ nullReturn }",
            json!({}),
            json!({"data": null, "errors": [{"message": "cannot return null for non-nullable field Query.nullReturn", "locations": [{"line": 1, "column": 3}], "path": ["nullReturn"]}]}),
        ),
        case(
            "propagates to nearest nullable parent",
            "{ deep { level inner { inner { boom } } } }",
            json!({}),
            json!({"data": {"deep": null}, "errors": [{"message": "boom", "locations": [{"line": 1, "column": 32}], "path": ["deep", "inner", "inner", "boom"]}]}),
        ),
        case(
            "list item null propagation",
            "{ deepList { level maybe } d2: deepList { boom } }",
            json!({}),
            json!({"data": {"deepList": [{"level": 0, "maybe": null}, null], "d2": [null, null]}, "errors": [{"message": "boom", "locations": [{"line": 1, "column": 43}], "path": ["d2", 0, "boom"]}]}),
        ),
        case(
            "output coercion failure",
            "{ wrongLeaf }",
            json!({}),
            json!({"data": {"wrongLeaf": null}, "errors": [{"message": "Query.wrongLeaf: cannot represent \"not a number\" as Int", "locations": [{"line": 1, "column": 3}], "path": ["wrongLeaf"]}]}),
        ),
        case(
            "void scalar",
            "{ nothing }",
            json!({}),
            json!({"data": {"nothing": null}}),
        ),
        case(
            "typename on nested objects",
            "{ container { __typename } }",
            json!({}),
            json!({"data": {"container": {"__typename": "Container"}}}),
        ),
        // --- request errors ---
        case(
            "syntax error",
            "{ version ",
            json!({}),
            json!({"errors": [{"message": "syntax error at 1:11: expected name, found end of input", "locations": [{"line": 1, "column": 11}]}]}),
        ),
        case(
            "missing operation name",
            "query A { version } query B { version }",
            json!({}),
            json!({"errors": [{"message": "must provide operation name if query contains multiple operations"}]}),
        ),
        case(
            "unknown operation name",
            "query A { version }",
            json!({"operationName": "C"}),
            json!({"errors": [{"message": "unknown operation named \"C\""}]}),
        ),
        case(
            "mutation refused",
            "mutation { version }",
            json!({}),
            json!({"errors": [{"message": "schema is not configured to execute mutation operations", "locations": [{"line": 1, "column": 1}]}]}),
        ),
        case(
            "required variable missing",
            "query($e: NetworkProtocol!) { echo(e: $e) }",
            json!({}),
            json!({"errors": [{"message": "variable $e of required type NetworkProtocol! was not provided", "locations": [{"line": 1, "column": 7}]}]}),
        ),
        case(
            "bad variable value",
            "query($n: Int) { echo(n: $n) }",
            json!({"n": "x"}),
            json!({"errors": [{"message": "variable $n got invalid value: expected type Int, found \"x\"", "locations": [{"line": 1, "column": 7}]}]}),
        ),
        case(
            "bad enum variable",
            "query($e: NetworkProtocol) { echo(e: $e) }",
            json!({"e": "QUIC"}),
            json!({"errors": [{"message": "variable $e got invalid value: value \"QUIC\" does not exist in enum NetworkProtocol", "locations": [{"line": 1, "column": 7}]}]}),
        ),
        // --- validation ---
        case(
            "unknown field",
            "{ nope }",
            json!({}),
            json!({"errors": [{"message": "cannot query field \"nope\" on type \"Query\"", "locations": [{"line": 1, "column": 3}]}]}),
        ),
        case(
            "unknown argument",
            "{ version(x: 1) }",
            json!({}),
            json!({"errors": [{"message": "unknown argument \"x\" on Query.version", "locations": [{"line": 1, "column": 3}]}]}),
        ),
        case(
            "required argument missing",
            "{ checkVersionCompatibility }",
            json!({}),
            json!({"errors": [{"message": "argument \"version\" of type \"String!\" on Query.checkVersionCompatibility is required, but it was not provided", "locations": [{"line": 1, "column": 3}]}]}),
        ),
        case(
            "wrong literal type",
            "{ checkVersionCompatibility(version: 1) }",
            json!({}),
            json!({"errors": [{"message": "argument \"version\" on Query.checkVersionCompatibility has an invalid value: expected type String, found 1", "locations": [{"line": 1, "column": 3}]}]}),
        ),
        case(
            "enum given as string",
            "{ echo(e: \"TCP\") }",
            json!({}),
            json!({"errors": [{"message": "argument \"e\" on Query.echo has an invalid value: enum NetworkProtocol cannot represent non-enum value \"TCP\"", "locations": [{"line": 1, "column": 3}]}]}),
        ),
        case(
            "unknown input field",
            "{ echo(input: {name: \"a\", other: 1}) }",
            json!({}),
            json!({"errors": [{"message": "argument \"input\" on Query.echo has an invalid value: field \"other\" is not defined by type BuildArg", "locations": [{"line": 1, "column": 3}]}]}),
        ),
        case(
            "missing required input field",
            "{ echo(input: {value: \"a\"}) }",
            json!({}),
            json!({"errors": [{"message": "argument \"input\" on Query.echo has an invalid value: field BuildArg.name of required type String! was not provided", "locations": [{"line": 1, "column": 3}]}]}),
        ),
        case(
            "leaf with selection",
            "{ version { x } }",
            json!({}),
            json!({"errors": [{"message": "field \"version\" must not have a selection since type \"String!\" has no subfields", "locations": [{"line": 1, "column": 3}]}]}),
        ),
        case(
            "object without selection",
            "{ container }",
            json!({}),
            json!({"errors": [{"message": "field \"container\" of type \"Container!\" must have a selection of subfields", "locations": [{"line": 1, "column": 3}]}]}),
        ),
        case(
            "undefined variable",
            "query Q { echo(n: $n) }",
            json!({}),
            json!({"errors": [{"message": "variable \"$n\" is not defined in operation \"Q\"", "locations": [{"line": 1, "column": 11}]}]}),
        ),
        case(
            "unused variable",
            "query Q($n: Int) { version }",
            json!({}),
            json!({"errors": [{"message": "variable \"$n\" is never used in operation \"Q\"", "locations": [{"line": 1, "column": 9}]}]}),
        ),
        case(
            "variable type mismatch",
            "query($n: String) { echo(n: $n) }",
            json!({}),
            json!({"errors": [{"message": "variable \"$n\" of type \"String\" used in position expecting type \"Int\"", "locations": [{"line": 1, "column": 21}]}]}),
        ),
        case(
            "nullable variable into non-null",
            "query($v: String) { checkVersionCompatibility(version: $v) }",
            json!({}),
            json!({"errors": [{"message": "variable \"$v\" of type \"String\" used in position expecting type \"String!\"", "locations": [{"line": 1, "column": 21}]}]}),
        ),
        case(
            "nullable variable with default into non-null is allowed",
            "query($v: String = \"v0.11.0\") { checkVersionCompatibility(version: $v) }",
            json!({}),
            json!({"data": {"checkVersionCompatibility": true}}),
        ),
        case(
            "non-input variable type",
            "query($c: Container) { version }",
            json!({}),
            json!({"errors": [{"message": "variable \"$c\" cannot be non-input type \"Container\"", "locations": [{"line": 1, "column": 7}]}, {"message": "variable \"$c\" is never used", "locations": [{"line": 1, "column": 7}]}]}),
        ),
        case(
            "unknown fragment",
            "{ ...Nope }",
            json!({}),
            json!({"errors": [{"message": "unknown fragment \"Nope\"", "locations": [{"line": 1, "column": 3}]}]}),
        ),
        case(
            "unused fragment",
            "{ version } fragment F on Query { version }",
            json!({}),
            json!({"errors": [{"message": "fragment \"F\" is never used", "locations": [{"line": 1, "column": 13}]}]}),
        ),
        case(
            "fragment cycle",
            "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
            json!({}),
            json!({"errors": [{"message": "cannot spread fragment \"A\" within itself", "locations": [{"line": 1, "column": 10}]}]}),
        ),
        case(
            "fragment on wrong type",
            "{ container { ...F } } fragment F on Query { version }",
            json!({}),
            json!({"errors": [{"message": "fragment \"F\" cannot be spread here as objects of type \"Container\" can never be of type \"Query\"", "locations": [{"line": 1, "column": 15}]}]}),
        ),
        case(
            "fragment on unknown type",
            "{ ...F } fragment F on Nope { version }",
            json!({}),
            json!({"errors": [{"message": "unknown type \"Nope\" in fragment \"F\"", "locations": [{"line": 1, "column": 10}]}]}),
        ),
        case(
            "fragment on scalar",
            "{ ...F } fragment F on String { version }",
            json!({}),
            json!({"errors": [{"message": "fragment \"F\" cannot condition on non composite type \"String\"", "locations": [{"line": 1, "column": 10}]}]}),
        ),
        case(
            "duplicate operation names",
            "query A { version } query A { version }",
            json!({"operationName": "A"}),
            json!({"errors": [{"message": "there can be only one operation named \"A\"", "locations": [{"line": 1, "column": 21}]}]}),
        ),
        case(
            "anonymous operation not alone",
            "{ version } query A { version }",
            json!({}),
            json!({"errors": [{"message": "this anonymous operation must be the only defined operation", "locations": [{"line": 1, "column": 1}]}]}),
        ),
        case(
            "conflicting fields",
            "{ a: version a: __typename }",
            json!({}),
            json!({"errors": [{"message": "fields \"a\" conflict because \"version\" and \"__typename\" are different fields; use different aliases", "locations": [{"line": 1, "column": 14}]}]}),
        ),
        case(
            "conflicting arguments",
            "{ c: checkVersionCompatibility(version: \"a\") c: checkVersionCompatibility(version: \"b\") }",
            json!({}),
            json!({"errors": [{"message": "fields \"c\" conflict because they have differing arguments; use different aliases", "locations": [{"line": 1, "column": 46}]}]}),
        ),
        case(
            "unknown directive",
            "{ version @nope }",
            json!({}),
            json!({"errors": [{"message": "unknown directive \"@nope\"", "locations": [{"line": 1, "column": 11}]}]}),
        ),
        case(
            "directive in wrong place",
            "{ version @deprecated }",
            json!({}),
            json!({"errors": [{"message": "directive \"@deprecated\" may not be used on FIELD", "locations": [{"line": 1, "column": 11}]}]}),
        ),
        case(
            "skip without if",
            "{ version @skip }",
            json!({}),
            json!({"errors": [{"message": "argument \"if\" of type \"Boolean!\" on @skip is required, but it was not provided", "locations": [{"line": 1, "column": 11}]}]}),
        ),
        case(
            "introspection fields only on Query",
            "{ container { __schema { queryType { name } } } }",
            json!({}),
            json!({"errors": [{"message": "cannot query field \"__schema\" on type \"Container\"", "locations": [{"line": 1, "column": 15}]}]}),
        ),
    ]
}

#[tokio::test]
async fn table() {
    let schema = common::schema();
    let mut failures = Vec::new();
    for c in cases() {
        let mut variables = c.variables.clone();
        let operation = variables
            .as_object_mut()
            .and_then(|m| m.remove("operationName"));
        let mut request = dagr_gql::Request::new(c.query).variables(variables);
        if let Some(Json::String(op)) = operation {
            request = request.operation_name(op);
        }
        let got = schema
            .execute(request, dagr_gql::RequestData::new())
            .await
            .to_json();
        if got != c.expected {
            failures.push(format!(
                "case {:?}\n  query:    {}\n  expected: {}\n  got:      {}",
                c.name, c.query, c.expected, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
