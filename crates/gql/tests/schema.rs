//! Schema building errors and SDL printing.
#![allow(clippy::unwrap_used)]

use dagr_gql::{
    Arg, Directive, Enum, Field, InputObject, Object, Schema, SchemaBuilder, SchemaError, Value,
};
use serde_json::json;

fn version() -> Field {
    Field::new("version", "String!").resolve_sync(|_| Ok(Value::leaf("v")))
}

fn query() -> Object {
    Object::new("Query").field(version())
}

fn err(builder: SchemaBuilder) -> String {
    builder.finish().unwrap_err().to_string()
}

#[test]
fn rejects_broken_schemas() {
    assert_eq!(
        Schema::build().finish().unwrap_err(),
        SchemaError::NoQueryType
    );
    assert_eq!(
        err(Schema::build().object(query()).object(query())),
        "type Query is defined twice"
    );
    assert_eq!(
        err(Schema::build()
            .object(query().field(Field::new("x", "Nope").resolve_sync(|_| Ok(Value::Null))))),
        "Query.x refers to unknown type Nope"
    );
    assert_eq!(
        err(Schema::build()
            .object(query().field(Field::new("x", "In").resolve_sync(|_| Ok(Value::Null))))
            .input(InputObject::new("In").field(Arg::new("a", "Int")))),
        "Query.x uses In which is not an output type"
    );
    assert_eq!(
        err(Schema::build().object(
            query().field(
                Field::new("x", "Int")
                    .arg(Arg::new("q", "Query"))
                    .resolve_sync(|_| Ok(Value::Null))
            )
        )),
        "Query.x(q) uses Query which is not an input type"
    );
    assert_eq!(
        err(Schema::build()
            .object(
                query().field(
                    Field::new("x", "Int")
                        .arg(Arg::new("e", "E").default("NOPE"))
                        .resolve_sync(|_| Ok(Value::Null))
                )
            )
            .enumeration(Enum::new("E").values(["A"]))),
        "default value of Query.x(e): value \"NOPE\" does not exist in enum E"
    );
    assert_eq!(
        err(Schema::build().object(
            query().field(
                Field::new("x", "Int")
                    .arg(Arg::new("n", "Int").default("1"))
                    .resolve_sync(|_| Ok(Value::Null))
            )
        )),
        "default value of Query.x(n): expected type Int, found \"1\""
    );
    assert_eq!(
        err(Schema::build().object(query().field(Field::new("x", "Int")))),
        "field Query.x has no resolver"
    );
    assert_eq!(
        err(Schema::build().object(query()).object(
            Object::new("T")
                .with_id()
                .field(Field::new("id", "String!").resolve_sync(|_| Ok(Value::Null)))
        )),
        "type T is marked with_id and must not define its own id field"
    );
    assert_eq!(
        err(Schema::build()
            .object(query())
            .directive(Directive::new("d", &["SOMEWHERE"]))),
        "directive @d has unknown location SOMEWHERE"
    );
    assert_eq!(
        err(Schema::build()
            .object(query())
            .object(Object::new("__T").field(version()))),
        "invalid name \"__T\" in object"
    );
    assert_eq!(
        err(Schema::build()
            .object(query().field(Field::new("x", "[Int").resolve_sync(|_| Ok(Value::Null))))),
        "Query.x: invalid type reference \"[Int\": unclosed list"
    );
    assert_eq!(
        err(Schema::build().object(query().field(version()))),
        "Query defines version twice"
    );
    assert_eq!(
        err(Schema::build().object(query()).enumeration(Enum::new("E"))),
        "type E has no values"
    );
}

#[test]
fn sdl_prints_descriptions_defaults_and_deprecations() {
    let schema = Schema::build()
        .object(
            Object::new("Query")
                .description("The root.\nSecond line with \"\"\" quotes.")
                .field(version().deprecated("No longer supported"))
                .field(
                    Field::new("f", "[T!]!")
                        .description("Makes Ts.")
                        .arg(Arg::new("mode", "Mode").default("SHARED"))
                        .arg(Arg::new("names", "[String!]").default(json!([])))
                        .arg(Arg::new("input", "In").default(json!({"a": 1.5})))
                        .arg(
                            Arg::new("flag", "Boolean")
                                .default(false)
                                .deprecated("gone"),
                        )
                        .resolve_sync(|_| Ok(Value::List(vec![]))),
                ),
        )
        .object(Object::new("T").with_id().field(version()))
        .enumeration(Enum::new("Mode").values(["SHARED", "LOCKED"]))
        .input(
            InputObject::new("In")
                .field(Arg::new("a", "Float").description("An a."))
                .field(Arg::new("b", "String").default("x")),
        )
        .finish()
        .unwrap();
    let sdl = schema.sdl();
    let expected = r#"enum Mode {
  SHARED
  LOCKED
}"#;
    assert!(sdl.contains(expected), "{sdl}");
    assert!(
        sdl.contains("\"\"\"\nThe root.\nSecond line with \\\"\"\" quotes.\n\"\"\"\ntype Query {"),
        "{sdl}"
    );
    assert!(sdl.contains("  version: String! @deprecated\n"), "{sdl}");
    assert!(
        sdl.contains(r#"  f(mode: Mode = SHARED, names: [String!] = [], input: In = {a: 1.5, b: "x"}, flag: Boolean = false @deprecated(reason: "gone")): [T!]!"#),
        "{sdl}"
    );
    assert!(sdl.contains("  loadTFromID(id: TID!): T!\n"), "{sdl}");
    assert!(
        sdl.contains(
            "type T {\n  \"\"\"\n  A unique identifier for this T.\n  \"\"\"\n  id: TID!\n"
        ),
        "{sdl}"
    );
    assert!(
        sdl.contains("input In {\n  \"\"\"\n  An a.\n  \"\"\"\n  a: Float\n  b: String = \"x\"\n}"),
        "{sdl}"
    );
    graphql_parser::parse_schema::<String>(&sdl).unwrap();
}
