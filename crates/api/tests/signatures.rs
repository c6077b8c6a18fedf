//! The served schema keeps the official SDKs' signatures: every type and field dagr serves that
//! `core-api-v0.11.8.graphqls` also declares has exactly its type, arguments, argument types and
//! defaults. Fields absent here are not built yet; fields beyond the file are listed in `EXTRA`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use graphql_parser::schema::{Definition, Document, TypeDefinition};

/// Fields dagr serves that the signature file does not declare, and why.
const EXTRA: &[(&str, &str)] = &[
    // The terminal runs through the caller's terminal attachable; v0.11.8's
    // `websocketEndpoint` served it over a websocket dagr does not have.
    ("Terminal", "sync"),
];

/// `type -> field -> (type, args: name -> (type, default))` of the object types of `sdl`.
type Fields = BTreeMap<String, BTreeMap<String, (String, BTreeMap<String, (String, String)>)>>;

fn object_fields(sdl: &str) -> Fields {
    let doc: Document<'_, String> = graphql_parser::parse_schema(sdl).unwrap();
    let mut out = Fields::new();
    for def in &doc.definitions {
        if let Definition::TypeDefinition(TypeDefinition::Object(o)) = def {
            let fields = out.entry(o.name.clone()).or_default();
            for f in &o.fields {
                let args = f
                    .arguments
                    .iter()
                    .map(|a| {
                        let default = a
                            .default_value
                            .as_ref()
                            .map(|d| d.to_string())
                            .unwrap_or_default();
                        (a.name.clone(), (a.value_type.to_string(), default))
                    })
                    .collect();
                fields.insert(f.name.clone(), (f.field_type.to_string(), args));
            }
        }
    }
    out
}

#[test]
fn served_fields_have_the_signature_files_types_arguments_and_defaults() {
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gql/tests/fixtures/core-api-v0.11.8.graphqls"
    ))
    .unwrap();
    let spec = object_fields(&spec);
    let served = object_fields(&dagr_api::schema().unwrap().sdl());
    let mut checked = 0;
    for (type_name, fields) in &served {
        let Some(spec_fields) = spec.get(type_name) else {
            panic!("type {type_name} is not in the signature file");
        };
        for (field, (ty, args)) in fields {
            let Some((spec_ty, spec_args)) = spec_fields.get(field) else {
                assert!(
                    EXTRA.contains(&(type_name.as_str(), field.as_str())),
                    "{type_name}.{field} is not in the signature file"
                );
                continue;
            };
            assert_eq!(ty, spec_ty, "type of {type_name}.{field}");
            assert_eq!(args, spec_args, "arguments of {type_name}.{field}");
            checked += 1;
        }
    }
    // The served API is not trivially small.
    assert!(checked > 100, "only {checked} fields checked");
}
