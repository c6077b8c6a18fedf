//! Property tests: whatever a client sends as a request body (random bytes, random text,
//! GraphQL-shaped text with deep nesting, huge lists and any unicode), the executor answers with
//! a response, never a panic, and within the limits (depth, document size). `PROPTEST_CASES`
//! sets how many cases run.

mod common;

use proptest::prelude::*;

fn execute(body: &[u8]) -> dagr_gql::Response {
    let schema = common::schema();
    futures::executor::block_on(schema.execute_body(body, dagr_gql::RequestData::new()))
}

/// GraphQL-shaped text: field names, arguments, braces, strings, lists and punctuation in any
/// order, so the parser meets half-valid documents.
fn graphql_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(":".to_owned()),
        Just(",".to_owned()),
        Just("...".to_owned()),
        Just("query".to_owned()),
        Just("fragment F on Query".to_owned()),
        Just("$v".to_owned()),
        Just("@include(if: true)".to_owned()),
        Just("container".to_owned()),
        Just("version".to_owned()),
        Just("withExec(args: [\"a\"])".to_owned()),
        Just("\"\"\"block\"\"\"".to_owned()),
        "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
        "\"[^\"\\\\]{0,8}\"",
        "-?[0-9]{1,20}(\\.[0-9]{1,5})?(e[0-9]{1,3})?",
        ".{1,3}",
    ];
    proptest::collection::vec(token, 0..64).prop_map(|tokens| tokens.join(" "))
}

proptest! {
    #[test]
    fn any_bytes_get_a_response(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = execute(&body);
    }

    #[test]
    fn any_query_text_gets_a_response(query in graphql_like()) {
        let body = serde_json::json!({ "query": query }).to_string();
        let _ = execute(body.as_bytes());
    }

    #[test]
    fn deep_nesting_is_refused_or_answered_never_overflowing(depth in 1usize..5000, selection in "[a-z]{1,8}") {
        let query = format!("{}{}", format!("{{ {selection} ").repeat(depth), "}".repeat(depth));
        let body = serde_json::json!({ "query": query }).to_string();
        let response = execute(body.as_bytes());
        if depth > dagr_gql::Limits::default().max_depth {
            prop_assert!(!response.errors.is_empty());
        }
    }

    #[test]
    fn huge_lists_and_any_unicode_in_arguments_get_a_response(
        items in proptest::collection::vec(".{0,16}", 0..2000),
    ) {
        let list = serde_json::to_string(&items).unwrap_or_default();
        let query = format!("{{ container {{ withExec(args: {list}) {{ id }} }} }}");
        let body = serde_json::json!({ "query": query }).to_string();
        let _ = execute(body.as_bytes());
    }
}
