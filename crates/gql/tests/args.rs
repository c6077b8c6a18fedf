//! Typed argument extraction: `ResolveCtx::args_as` and fields declared with `Field::args`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use dagr_gql::{
    Arg, Args, ArgsError, Enum, Field, InputObject, Object, Request, RequestData, Scalar, Schema,
    SchemaBuilder, SchemaError, Value,
};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value as Json, json};

/// What the resolver of `Query.f` extracted.
type Slot<T> = Arc<Mutex<Option<Result<T, ArgsError>>>>;

#[derive(Clone, Default)]
struct Thing;

/// A schema whose `Query.f` declares `args` and extracts `T`, plus the types the tests use: enum
/// `Mode`, input objects `Label` and `Spec`, scalar `JSON`, and `Thing` (with ID).
fn schema_for<T: for<'de> Deserialize<'de> + Send + 'static>(
    args: Vec<Arg>,
    slot: &Slot<T>,
) -> Schema {
    let slot = Arc::clone(slot);
    let mut f = Field::new("f", "Boolean!").resolve_sync(move |ctx| {
        *slot.lock() = Some(ctx.args_as::<T>());
        Ok(Value::leaf(true))
    });
    for arg in args {
        f = f.arg(arg);
    }
    types(Schema::build().object(query().field(f)))
        .finish()
        .unwrap()
}

fn query() -> Object {
    Object::new("Query").field(
        Field::new("thing", "Thing!").resolve_sync(|_| Ok(Value::object("Thing", Arc::new(Thing)))),
    )
}

fn types(builder: SchemaBuilder) -> SchemaBuilder {
    builder
        .object(
            Object::new("Thing")
                .with_id()
                .field(Field::new("ok", "Boolean!").resolve_sync(|_| Ok(Value::leaf(true)))),
        )
        .enumeration(Enum::new("Mode").values(["SHARED", "PRIVATE", "LOCKED"]))
        .input(
            InputObject::new("Label")
                .field(Arg::new("name", "String!"))
                .field(Arg::new("value", "String!")),
        )
        .input(
            InputObject::new("Spec")
                .field(Arg::new("mountPath", "String!"))
                .field(Arg::new("readOnly", "Boolean").default(false))
                .field(Arg::new("labels", "[Label!]").default(json!([])))
                .field(Arg::new("owner", "String")),
        )
        .scalar(Scalar::new("JSON"))
}

/// Runs `{ f(<call_args>) }` and returns what `args_as::<T>` gave.
fn extract<T: for<'de> Deserialize<'de> + Send + 'static>(
    args: Vec<Arg>,
    call_args: &str,
) -> Result<T, ArgsError> {
    let slot: Slot<T> = Arc::default();
    let schema = schema_for(args, &slot);
    let query = if call_args.is_empty() {
        "{ f }".to_string()
    } else {
        format!("{{ f({call_args}) }}")
    };
    let response = run(&schema, &query);
    assert_eq!(response, json!({"data": {"f": true}}), "{query}");
    slot.lock().take().unwrap()
}

fn run(schema: &Schema, query: &str) -> Json {
    futures::executor::block_on(schema.execute(Request::new(query), RequestData::new())).to_json()
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Mode {
    Shared,
    Private,
    Locked,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Label {
    name: String,
    value: String,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    mount_path: String,
    read_only: bool,
    labels: Vec<Label>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Everything {
    path: String,
    skip_entrypoint: bool,
    size: i64,
    mode_bits: u32,
    ratio: f64,
    names: Vec<String>,
    platform: Option<String>,
    mode: Mode,
    spec: Spec,
    extra: Json,
}

fn everything_args() -> Vec<Arg> {
    vec![
        Arg::new("path", "String!"),
        Arg::new("skipEntrypoint", "Boolean").default(false),
        Arg::new("size", "Int!"),
        Arg::new("modeBits", "Int").default(0o644),
        Arg::new("ratio", "Float!"),
        Arg::new("names", "[String!]!"),
        Arg::new("platform", "String"),
        Arg::new("mode", "Mode").default("SHARED"),
        Arg::new("spec", "Spec!"),
        Arg::new("extra", "JSON"),
        Arg::new("ignored", "String").default("not read"),
    ]
}

#[test]
fn reads_scalars_lists_enums_input_objects_and_defaults() {
    let got: Everything = extract(
        everything_args(),
        r#"path: "/src", size: 5000000000, ratio: 2, names: "one", mode: LOCKED,
           spec: {mountPath: "/m", labels: [{name: "a", value: "b"}]}, extra: {k: [1, "x"]}"#,
    )
    .unwrap();
    assert_eq!(
        got,
        Everything {
            path: "/src".into(),
            skip_entrypoint: false,
            size: 5_000_000_000,
            mode_bits: 0o644,
            ratio: 2.0,
            names: vec!["one".into()],
            platform: None,
            mode: Mode::Locked,
            spec: Spec {
                mount_path: "/m".into(),
                read_only: false,
                labels: vec![Label {
                    name: "a".into(),
                    value: "b".into()
                }],
            },
            extra: json!({"k": [1, "x"]}),
        }
    );
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Optional {
    platform: Option<String>,
    mode: Option<Mode>,
    labels: Option<Vec<Label>>,
}

#[test]
fn optional_arguments_read_as_none_when_absent_or_null() {
    let args = || {
        vec![
            Arg::new("platform", "String"),
            Arg::new("mode", "Mode").default("PRIVATE"),
            Arg::new("labels", "[Label!]"),
        ]
    };
    assert_eq!(
        extract::<Optional>(args(), "").unwrap(),
        Optional {
            platform: None,
            mode: Some(Mode::Private),
            labels: None
        }
    );
    assert_eq!(
        extract::<Optional>(args(), "platform: null, mode: null, labels: null").unwrap(),
        Optional {
            platform: None,
            mode: None,
            labels: None
        }
    );
    assert_eq!(
        extract::<Optional>(
            args(),
            r#"platform: "linux/arm64", labels: [{name: "n", value: "v"}]"#
        )
        .unwrap(),
        Optional {
            platform: Some("linux/arm64".into()),
            mode: Some(Mode::Private),
            labels: Some(vec![Label {
                name: "n".into(),
                value: "v".into()
            }]),
        }
    );
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct NeedsPlatform {
    platform: String,
}

#[test]
fn a_required_field_without_a_value_is_missing() {
    let err = extract::<NeedsPlatform>(vec![Arg::new("platform", "String")], "").unwrap_err();
    assert_eq!(
        err,
        ArgsError::Missing {
            field: "Query.f".into(),
            argument: "platform".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "argument platform of Query.f was not given"
    );
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct NeedsOwner {
    spec: SpecWithOwner,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read only through Debug
struct SpecWithOwner {
    mount_path: String,
    owner: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct MisspeltOwner {
    spec: SpecWithOwnr,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read only through Debug
struct SpecWithOwnr {
    mount_path: String,
    ownr: Option<String>,
}

#[test]
fn errors_inside_input_objects_name_the_path() {
    let spec = || vec![Arg::new("spec", "Spec")];
    let err = extract::<NeedsOwner>(spec(), r#"spec: {mountPath: "/m"}"#).unwrap_err();
    assert_eq!(
        err,
        ArgsError::Missing {
            field: "Query.f".into(),
            argument: "spec.owner".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "argument spec.owner of Query.f was not given"
    );
    let err =
        extract::<MisspeltOwner>(spec(), r#"spec: {mountPath: "/m", owner: "me"}"#).unwrap_err();
    assert_eq!(
        err,
        ArgsError::Undeclared {
            field: "Query.f".into(),
            argument: "spec.ownr".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "argument spec.ownr of Query.f is not declared"
    );
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct WrongLabels {
    labels: Vec<WrongLabel>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct WrongLabel {
    name: String,
    value: i64,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct WrongPath {
    path: i64,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct Flag {
    flag: bool,
}

#[test]
fn a_value_of_the_wrong_type_is_invalid() {
    let err = extract::<WrongPath>(vec![Arg::new("path", "String!")], r#"path: "/x""#).unwrap_err();
    assert_eq!(
        err,
        ArgsError::Invalid {
            field: "Query.f".into(),
            argument: "path".into(),
            reason: "invalid type: string \"/x\", expected i64".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "argument path of Query.f: invalid type: string \"/x\", expected i64"
    );

    let err = extract::<WrongLabels>(
        vec![Arg::new("labels", "[Label!]!")],
        r#"labels: [{name: "a", value: "1"}, {name: "b", value: "x"}]"#,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ArgsError::Invalid {
            field: "Query.f".into(),
            argument: "labels[0].value".into(),
            reason: "invalid type: string \"1\", expected i64".into(),
        }
    );

    // An explicit null overrides a default: a plain field cannot hold it.
    let err = extract::<Flag>(
        vec![Arg::new("flag", "Boolean").default(false)],
        "flag: null",
    )
    .unwrap_err();
    assert_eq!(
        err,
        ArgsError::Invalid {
            field: "Query.f".into(),
            argument: "flag".into(),
            reason: "invalid type: unit value, expected a boolean".into(),
        }
    );
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
enum TwoModes {
    #[serde(rename = "SHARED")]
    Shared,
    #[serde(rename = "PRIVATE")]
    Private,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct ModeOnly {
    mode: TwoModes,
}

#[derive(Debug, Deserialize)]
struct ModeString {
    mode: String,
}

#[test]
fn enums_read_as_rust_enums_or_strings() {
    let mode = || vec![Arg::new("mode", "Mode!")];
    assert!(matches!(
        extract::<ModeOnly>(mode(), "mode: PRIVATE").unwrap().mode,
        TwoModes::Private
    ));
    assert_eq!(
        extract::<ModeString>(mode(), "mode: LOCKED").unwrap().mode,
        "LOCKED"
    );
    let err = extract::<ModeOnly>(mode(), "mode: LOCKED").unwrap_err();
    assert_eq!(
        err,
        ArgsError::Invalid {
            field: "Query.f".into(),
            argument: "mode".into(),
            reason: "unknown variant `LOCKED`, expected `SHARED` or `PRIVATE`".into(),
        }
    );
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct Misspelt {
    pth: Option<String>,
}

#[test]
fn a_field_naming_no_argument_is_undeclared() {
    let err = extract::<Misspelt>(vec![Arg::new("path", "String")], r#"path: "/""#).unwrap_err();
    assert_eq!(
        err,
        ArgsError::Undeclared {
            field: "Query.f".into(),
            argument: "pth".into()
        }
    );
}

#[test]
fn arguments_read_only_into_structs_and_maps() {
    let err = extract::<String>(vec![Arg::new("path", "String")], r#"path: "/""#).unwrap_err();
    assert_eq!(
        err,
        ArgsError::Unfit {
            field: "Query.f".into(),
            reason: "invalid type: map, expected a string".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "arguments of Query.f do not fit: invalid type: map, expected a string"
    );
    let all = extract::<Json>(
        vec![Arg::new("path", "String"), Arg::new("n", "Int").default(3)],
        r#"path: "/""#,
    )
    .unwrap();
    assert_eq!(all, json!({"path": "/", "n": 3}));
}

#[derive(Debug, Deserialize)]
struct PathOnly {
    path: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct WithSource {
    path: String,
    source: Option<String>,
}

#[test]
fn object_ids_stay_out_of_the_struct() {
    let thing_id = {
        let slot: Slot<PathOnly> = Arc::default();
        let schema = schema_for(vec![], &slot);
        run(&schema, "{ thing { id } }")["data"]["thing"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let args = || vec![Arg::new("path", "String!"), Arg::new("source", "ThingID")];
    let call = format!(r#"path: "/p", source: "{thing_id}""#);
    assert_eq!(extract::<PathOnly>(args(), &call).unwrap().path, "/p");
    let err = extract::<WithSource>(args(), &call).unwrap_err();
    assert_eq!(
        err,
        ArgsError::ObjectId {
            field: "Query.f".into(),
            argument: "source".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "argument source of Query.f is an object ID: read it with ResolveCtx::loaded"
    );
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read only through Debug
struct Secret {
    plaintext: String,
}

#[test]
fn sensitive_arguments_replayed_from_an_id_are_redacted() {
    let slot: Slot<Secret> = Arc::default();
    let resolver_slot = Arc::clone(&slot);
    let schema = types(
        Schema::build().object(
            query().field(
                Field::new("secret", "Thing!")
                    .arg(Arg::new("plaintext", "String!").sensitive())
                    .resolve_sync(move |ctx| {
                        *resolver_slot.lock() = Some(ctx.args_as::<Secret>());
                        Ok(Value::object("Thing", Arc::new(Thing)))
                    }),
            ),
        ),
    )
    .finish()
    .unwrap();
    let response = run(&schema, r#"{ secret(plaintext: "hunter2") { id } }"#);
    assert_eq!(slot.lock().take().unwrap().unwrap().plaintext, "hunter2");
    let id = response["data"]["secret"]["id"].as_str().unwrap();
    let load = format!(r#"{{ loadThingFromID(id: "{id}") {{ ok }} }}"#);
    assert_eq!(
        run(&schema, &load),
        json!({"data": {"loadThingFromID": {"ok": true}}})
    );
    assert_eq!(
        slot.lock().take().unwrap().unwrap_err(),
        ArgsError::Redacted {
            field: "Query.secret".into(),
            argument: "plaintext".into()
        }
    );
}

/// The arguments of `Query.exec`, declared once.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Exec {
    args: Vec<String>,
    skip_entrypoint: bool,
    stdin: String,
    platform: Option<String>,
}

impl Args for Exec {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("args", "[String!]!"),
            Arg::new("skipEntrypoint", "Boolean").default(false),
            Arg::new("stdin", "String").default(""),
            Arg::new("platform", "String"),
            Arg::new("source", "ThingID"),
        ]
    }
}

#[test]
fn fields_declare_their_arguments_from_an_args_type() {
    let slot: Slot<Exec> = Arc::default();
    let resolver_slot = Arc::clone(&slot);
    let schema =
        types(
            Schema::build().object(
                query().field(Field::new("exec", "Boolean!").args::<Exec>().resolve_sync(
                    move |ctx| {
                        *resolver_slot.lock() = Some(ctx.args_as::<Exec>());
                        Ok(Value::leaf(ctx.arg_value("source").is_some()))
                    },
                )),
            ),
        )
        .finish()
        .unwrap();
    assert!(
        schema.sdl().contains(
            "  exec(args: [String!]!, skipEntrypoint: Boolean = false, stdin: String = \"\", platform: String, source: ThingID): Boolean!\n"
        ),
        "{}",
        schema.sdl()
    );
    assert_eq!(
        run(&schema, r#"{ exec(args: ["ls"], stdin: "in") }"#),
        json!({"data": {"exec": false}})
    );
    assert_eq!(
        slot.lock().take().unwrap().unwrap(),
        Exec {
            args: vec!["ls".into()],
            skip_entrypoint: false,
            stdin: "in".into(),
            platform: None,
        }
    );
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // only declared
struct Undeclared {
    path: String,
    skip_entrypoint: bool,
}

impl Args for Undeclared {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("path", "String!"),
            Arg::new("skip_entrypoint", "Boolean").default(false),
        ]
    }
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // only declared
struct ReadsId {
    source: String,
}

impl Args for ReadsId {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("source", "ThingID!")]
    }
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // only declared
struct Newtype(String);

impl Args for Newtype {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("path", "String!")]
    }
}

fn finish_with(field: Field) -> SchemaError {
    types(Schema::build().object(query().field(field.resolve_sync(|_| Ok(Value::leaf(true))))))
        .finish()
        .unwrap_err()
}

#[test]
fn finish_checks_args_types_against_the_declared_arguments() {
    let err = finish_with(Field::new("f", "Boolean!").args::<Undeclared>());
    assert_eq!(
        err.to_string(),
        format!(
            "arguments type {} of Query.f reads skipEntrypoint, which Query.f does not declare",
            std::any::type_name::<Undeclared>()
        )
    );
    let err = finish_with(Field::new("f", "Boolean!").args::<ReadsId>());
    assert_eq!(
        err,
        SchemaError::ArgsObjectId {
            owner: "Query.f".into(),
            type_name: std::any::type_name::<ReadsId>().into(),
            name: "source".into(),
        }
    );
    let err = finish_with(Field::new("f", "Boolean!").args::<Newtype>());
    assert_eq!(
        err,
        SchemaError::ArgsNotStruct {
            owner: "Query.f".into(),
            type_name: std::any::type_name::<Newtype>().into(),
        }
    );
}
