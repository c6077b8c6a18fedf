//! The Dagger core API signature file, served through the schema builder.

use dagr_gql::{
    Arg, Directive, Enum, EnumValue, Field, FieldError, InputObject, Object, Resolver, Scalar,
    Schema,
};
use graphql_parser::schema::{Definition, TypeDefinition, Value as V};
use serde_json::json;

/// The Dagger v0.11.8 core API signatures served by `resolvers(type, field)` or, where it gives
/// `None`, by resolvers that only fail. Types marked
/// with an `id: <T>ID!` field become `with_id()` objects (their ID scalars and `load<T>FromID`
/// fields are generated).
pub fn core_api(resolvers: impl Fn(&str, &str) -> Option<Resolver>) -> (Schema, String) {
    fn to_json(v: &V<'static, String>) -> serde_json::Value {
        match v {
            V::Int(n) => json!(n.as_i64().unwrap()),
            V::Float(f) => json!(f),
            V::String(s) | V::Enum(s) => json!(s),
            V::Boolean(b) => json!(b),
            V::Null => serde_json::Value::Null,
            V::List(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
            V::Object(fields) => fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
            V::Variable(_) => panic!("variable in SDL"),
        }
    }
    fn deprecation(
        directives: &[graphql_parser::schema::Directive<'static, String>],
    ) -> Option<String> {
        directives
            .iter()
            .find(|d| d.name == "deprecated")
            .map(|d| match d.arguments.first() {
                Some((_, V::String(reason))) => reason.clone(),
                _ => "No longer supported".to_string(),
            })
    }
    fn arg(v: &graphql_parser::schema::InputValue<'static, String>) -> Arg {
        let mut a = Arg::new(&v.name, &v.value_type.to_string());
        if let Some(d) = &v.default_value {
            a = a.default(to_json(d));
        }
        if let Some(reason) = deprecation(&v.directives) {
            a = a.deprecated(&reason);
        }
        a
    }

    let sdl = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/core-api-v0.11.8.graphqls"
    ))
    .unwrap();
    let doc = graphql_parser::parse_schema::<String>(&sdl)
        .unwrap()
        .into_static();
    let with_id: Vec<String> = doc
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::TypeDefinition(TypeDefinition::Object(o))
                if o.fields.iter().any(|f| {
                    f.name == "id" && f.field_type.to_string() == format!("{}ID!", o.name)
                }) =>
            {
                Some(o.name.clone())
            }
            _ => None,
        })
        .collect();
    let mut builder = Schema::build();
    for def in &doc.definitions {
        match def {
            Definition::DirectiveDefinition(d) => {
                let locations: Vec<&str> = d.locations.iter().map(|l| l.as_str()).collect();
                let mut directive = Directive::new(&d.name, &locations);
                for a in &d.arguments {
                    directive = directive.arg(arg(a));
                }
                builder = builder.directive(directive);
            }
            Definition::TypeDefinition(TypeDefinition::Scalar(s)) => {
                if !with_id.iter().any(|t| format!("{t}ID") == s.name) {
                    builder = builder.scalar(Scalar::new(&s.name));
                }
            }
            Definition::TypeDefinition(TypeDefinition::Enum(e)) => {
                let mut en = Enum::new(&e.name);
                for v in &e.values {
                    let mut value = EnumValue::new(&v.name);
                    if let Some(reason) = deprecation(&v.directives) {
                        value = value.deprecated(&reason);
                    }
                    en = en.value(value);
                }
                builder = builder.enumeration(en);
            }
            Definition::TypeDefinition(TypeDefinition::InputObject(i)) => {
                let mut input = InputObject::new(&i.name);
                for f in &i.fields {
                    input = input.field(arg(f));
                }
                builder = builder.input(input);
            }
            Definition::TypeDefinition(TypeDefinition::Object(o)) => {
                let mut object = Object::new(&o.name);
                if with_id.contains(&o.name) {
                    object = object.with_id();
                }
                for f in &o.fields {
                    let generated = (f.name == "id" && with_id.contains(&o.name))
                        || (o.name == "Query"
                            && with_id.iter().any(|t| f.name == format!("load{t}FromID")));
                    if generated {
                        continue;
                    }
                    let field = Field::new(&f.name, &f.field_type.to_string());
                    let mut field = match resolvers(&o.name, &f.name) {
                        Some(resolver) => field.resolve(move |ctx| resolver(ctx)),
                        None => field.resolve_sync(|ctx| {
                            Err(FieldError::new(format!(
                                "{} is not served by this test",
                                ctx.field_name()
                            )))
                        }),
                    };
                    for a in &f.arguments {
                        field = field.arg(arg(a));
                    }
                    if let Some(reason) = deprecation(&f.directives) {
                        field = field.deprecated(&reason);
                    }
                    object = object.field(field);
                }
                builder = builder.object(object);
            }
            other => panic!("unexpected definition in the core API file: {other:?}"),
        }
    }
    (builder.finish().unwrap(), sdl)
}
