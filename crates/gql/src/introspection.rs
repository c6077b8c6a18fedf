//! The introspection types (`__Schema`, `__Type`, ...) as ordinary object types whose resolvers
//! read the finished schema, and the `__schema` / `__type` fields of `Query`.

use std::sync::Arc;

use crate::exec::ResolveCtx;
use crate::schema::{
    Arg, DIRECTIVE_LOCATIONS, Enum, Field, InputValueDef, Object, SchemaInner, TypeDef,
};
use crate::types::TypeRef;
use crate::value::{FieldError, Value};

struct IntroSchema;

struct IntroType(TypeRef);

struct IntroField {
    owner: String,
    field: String,
}

struct IntroInputValue {
    name: String,
    description: Option<String>,
    ty: TypeRef,
    default: Option<String>,
    deprecation: Option<String>,
}

struct IntroEnumValue {
    name: String,
    description: Option<String>,
    deprecation: Option<String>,
}

struct IntroDirective(String);

fn ty_value(ty: TypeRef) -> Value {
    Value::object("__Type", Arc::new(IntroType(ty)))
}

fn named(name: &str) -> Value {
    ty_value(TypeRef::Named(name.to_string()))
}

fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, Value::leaf)
}

fn input_values<'a>(
    values: impl Iterator<Item = &'a InputValueDef>,
    include_deprecated: bool,
) -> Value {
    Value::List(
        values
            .filter(|v| include_deprecated || v.deprecation.is_none())
            .map(|v| {
                Value::object(
                    "__InputValue",
                    Arc::new(IntroInputValue {
                        name: v.name.clone(),
                        description: v.description.clone(),
                        ty: v.ty.clone(),
                        default: v.default.as_ref().map(|d| d.to_literal()),
                        deprecation: v.deprecation.clone(),
                    }),
                )
            })
            .collect(),
    )
}

fn include_deprecated(ctx: &ResolveCtx) -> Result<bool, FieldError> {
    Ok(ctx
        .arg::<Option<bool>>("includeDeprecated")?
        .unwrap_or(false))
}

/// The hidden `Query` fields.
pub(crate) fn query_fields() -> Vec<Field> {
    vec![
        Field::new("__schema", "__Schema!")
            .description("Access the current type schema of this server.")
            .resolve_sync(|_| Ok(Value::object("__Schema", Arc::new(IntroSchema)))),
        Field::new("__type", "__Type")
            .description("Request the type information of a single type.")
            .arg(Arg::new("name", "String!"))
            .resolve_sync(|ctx| {
                let name: String = ctx.arg("name")?;
                Ok(if ctx.schema().types.contains_key(&name) {
                    named(&name)
                } else {
                    Value::Null
                })
            }),
    ]
}

fn intro_type(ctx: &ResolveCtx) -> Result<(&TypeRef, Option<&TypeDef>), FieldError> {
    let IntroType(ty) = ctx.parent::<IntroType>()?;
    let def = match ty {
        TypeRef::Named(name) => Some(
            ctx.schema()
                .types
                .get(name)
                .ok_or_else(|| FieldError::new(format!("unknown type {name}")))?,
        ),
        _ => None,
    };
    Ok((ty, def))
}

fn field_def<'a>(
    schema: &'a SchemaInner,
    f: &IntroField,
) -> Result<&'a crate::schema::FieldDef, FieldError> {
    schema
        .object(&f.owner)
        .and_then(|o| o.fields.get(&f.field))
        .ok_or_else(|| FieldError::new(format!("unknown field {}.{}", f.owner, f.field)))
}

/// The introspection object types.
pub(crate) fn objects() -> Vec<Object> {
    let schema = Object::new("__Schema")
        .description("A GraphQL Schema defines the capabilities of a GraphQL server. It exposes all available types and directives on the server, as well as the entry points for query, mutation, and subscription operations.")
        .field(Field::new("description", "String").resolve_sync(|_| Ok(Value::Null)))
        .field(
            Field::new("types", "[__Type!]!")
                .description("A list of all types supported by this server.")
                .resolve_sync(|ctx| Ok(Value::List(ctx.schema().types.keys().map(|n| named(n)).collect()))),
        )
        .field(
            Field::new("queryType", "__Type!")
                .description("The type that query operations will be rooted at.")
                .resolve_sync(|_| Ok(named("Query"))),
        )
        .field(
            Field::new("mutationType", "__Type")
                .description("If this server supports mutation, the type that mutation operations will be rooted at.")
                .resolve_sync(|_| Ok(Value::Null)),
        )
        .field(
            Field::new("subscriptionType", "__Type")
                .description("If this server support subscription, the type that subscription operations will be rooted at.")
                .resolve_sync(|_| Ok(Value::Null)),
        )
        .field(
            Field::new("directives", "[__Directive!]!")
                .description("A list of all directives supported by this server.")
                .resolve_sync(|ctx| {
                    Ok(Value::List(
                        ctx.schema()
                            .directives
                            .keys()
                            .map(|n| Value::object("__Directive", Arc::new(IntroDirective(n.clone()))))
                            .collect(),
                    ))
                }),
        );

    let ty = Object::new("__Type")
        .description("The fundamental unit of any GraphQL Schema is the type. There are many kinds of types in GraphQL as represented by the `__TypeKind` enum.\n\nDepending on the kind of a type, certain fields describe information about that type. Scalar types provide no information beyond a name, description and optional `specifiedByURL`, while Enum types provide their values. Object and Interface types provide the fields they describe. Abstract types, Union and Interface, provide the Object types possible at runtime. List and NonNull types compose other types.")
        .field(Field::new("kind", "__TypeKind!").resolve_sync(|ctx| {
            let kind = match intro_type(ctx)? {
                (TypeRef::List(_), _) => "LIST",
                (TypeRef::NonNull(_), _) => "NON_NULL",
                (_, Some(TypeDef::Scalar(_))) => "SCALAR",
                (_, Some(TypeDef::Object(_))) => "OBJECT",
                (_, Some(TypeDef::Enum(_))) => "ENUM",
                (_, Some(TypeDef::InputObject(_))) => "INPUT_OBJECT",
                (_, None) => return Err(FieldError::new("named type without definition")),
            };
            Ok(Value::leaf(kind))
        }))
        .field(Field::new("name", "String").resolve_sync(|ctx| Ok(opt_str(intro_type(ctx)?.1.map(TypeDef::name)))))
        .field(
            Field::new("description", "String")
                .resolve_sync(|ctx| Ok(opt_str(intro_type(ctx)?.1.and_then(TypeDef::description)))),
        )
        .field(Field::new("specifiedByURL", "String").resolve_sync(|ctx| {
            Ok(match intro_type(ctx)?.1 {
                Some(TypeDef::Scalar(s)) => opt_str(s.specified_by.as_deref()),
                _ => Value::Null,
            })
        }))
        .field(
            Field::new("fields", "[__Field!]")
                .arg(Arg::new("includeDeprecated", "Boolean").default(false))
                .resolve_sync(|ctx| {
                    let include = include_deprecated(ctx)?;
                    Ok(match intro_type(ctx)?.1 {
                        Some(TypeDef::Object(o)) => Value::List(
                            o.fields
                                .values()
                                .filter(|f| !f.hidden && (include || f.deprecation.is_none()))
                                .map(|f| {
                                    Value::object(
                                        "__Field",
                                        Arc::new(IntroField { owner: o.name.clone(), field: f.name.clone() }),
                                    )
                                })
                                .collect(),
                        ),
                        _ => Value::Null,
                    })
                }),
        )
        .field(Field::new("interfaces", "[__Type!]").resolve_sync(|ctx| {
            Ok(match intro_type(ctx)?.1 {
                Some(TypeDef::Object(_)) => Value::List(Vec::new()),
                _ => Value::Null,
            })
        }))
        .field(Field::new("possibleTypes", "[__Type!]").resolve_sync(|_| Ok(Value::Null)))
        .field(
            Field::new("enumValues", "[__EnumValue!]")
                .arg(Arg::new("includeDeprecated", "Boolean").default(false))
                .resolve_sync(|ctx| {
                    let include = include_deprecated(ctx)?;
                    Ok(match intro_type(ctx)?.1 {
                        Some(TypeDef::Enum(e)) => Value::List(
                            e.values
                                .values()
                                .filter(|v| include || v.deprecation.is_none())
                                .map(|v| {
                                    Value::object(
                                        "__EnumValue",
                                        Arc::new(IntroEnumValue {
                                            name: v.name.clone(),
                                            description: v.description.clone(),
                                            deprecation: v.deprecation.clone(),
                                        }),
                                    )
                                })
                                .collect(),
                        ),
                        _ => Value::Null,
                    })
                }),
        )
        .field(
            Field::new("inputFields", "[__InputValue!]")
                .arg(Arg::new("includeDeprecated", "Boolean").default(false))
                .resolve_sync(|ctx| {
                    let include = include_deprecated(ctx)?;
                    Ok(match intro_type(ctx)?.1 {
                        Some(TypeDef::InputObject(i)) => input_values(i.fields.values(), include),
                        _ => Value::Null,
                    })
                }),
        )
        .field(Field::new("ofType", "__Type").resolve_sync(|ctx| {
            Ok(match intro_type(ctx)?.0 {
                TypeRef::List(inner) | TypeRef::NonNull(inner) => ty_value(inner.as_ref().clone()),
                TypeRef::Named(_) => Value::Null,
            })
        }))
        .field(Field::new("isOneOf", "Boolean").resolve_sync(|ctx| {
            Ok(match intro_type(ctx)?.1 {
                Some(TypeDef::InputObject(_)) => Value::leaf(false),
                _ => Value::Null,
            })
        }));

    let field = Object::new("__Field")
        .description("Object and Interface types are described by a list of Fields, each of which has a name, potentially a list of arguments, and a return type.")
        .field(Field::new("name", "String!").resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<IntroField>()?.field.clone()))))
        .field(Field::new("description", "String").resolve_sync(|ctx| {
            let def = field_def(ctx.schema(), ctx.parent::<IntroField>()?)?;
            Ok(opt_str(def.description.as_deref()))
        }))
        .field(
            Field::new("args", "[__InputValue!]!")
                .arg(Arg::new("includeDeprecated", "Boolean").default(false))
                .resolve_sync(|ctx| {
                    let def = field_def(ctx.schema(), ctx.parent::<IntroField>()?)?;
                    Ok(input_values(def.args.values(), include_deprecated(ctx)?))
                }),
        )
        .field(Field::new("type", "__Type!").resolve_sync(|ctx| {
            let def = field_def(ctx.schema(), ctx.parent::<IntroField>()?)?;
            Ok(ty_value(def.ty.clone()))
        }))
        .field(Field::new("isDeprecated", "Boolean!").resolve_sync(|ctx| {
            let def = field_def(ctx.schema(), ctx.parent::<IntroField>()?)?;
            Ok(Value::leaf(def.deprecation.is_some()))
        }))
        .field(Field::new("deprecationReason", "String").resolve_sync(|ctx| {
            let def = field_def(ctx.schema(), ctx.parent::<IntroField>()?)?;
            Ok(opt_str(def.deprecation.as_deref()))
        }));

    let input_value = Object::new("__InputValue")
        .description("Arguments provided to Fields or Directives and the input fields of an InputObject are represented as Input Values which describe their type and optionally a default value.")
        .field(Field::new("name", "String!").resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<IntroInputValue>()?.name.clone()))))
        .field(
            Field::new("description", "String")
                .resolve_sync(|ctx| Ok(opt_str(ctx.parent::<IntroInputValue>()?.description.as_deref()))),
        )
        .field(Field::new("type", "__Type!").resolve_sync(|ctx| Ok(ty_value(ctx.parent::<IntroInputValue>()?.ty.clone()))))
        .field(
            Field::new("defaultValue", "String")
                .description("A GraphQL-formatted string representing the default value for this input value.")
                .resolve_sync(|ctx| Ok(opt_str(ctx.parent::<IntroInputValue>()?.default.as_deref()))),
        )
        .field(
            Field::new("isDeprecated", "Boolean!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<IntroInputValue>()?.deprecation.is_some()))),
        )
        .field(
            Field::new("deprecationReason", "String")
                .resolve_sync(|ctx| Ok(opt_str(ctx.parent::<IntroInputValue>()?.deprecation.as_deref()))),
        );

    let enum_value = Object::new("__EnumValue")
        .description("One possible value for a given Enum. Enum values are unique values, not a placeholder for a string or numeric value. However an Enum value is returned in a JSON response as a string.")
        .field(Field::new("name", "String!").resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<IntroEnumValue>()?.name.clone()))))
        .field(
            Field::new("description", "String")
                .resolve_sync(|ctx| Ok(opt_str(ctx.parent::<IntroEnumValue>()?.description.as_deref()))),
        )
        .field(
            Field::new("isDeprecated", "Boolean!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<IntroEnumValue>()?.deprecation.is_some()))),
        )
        .field(
            Field::new("deprecationReason", "String")
                .resolve_sync(|ctx| Ok(opt_str(ctx.parent::<IntroEnumValue>()?.deprecation.as_deref()))),
        );

    fn directive(ctx: &ResolveCtx) -> Result<&crate::schema::DirectiveDef, FieldError> {
        let IntroDirective(name) = ctx.parent::<IntroDirective>()?;
        ctx.schema()
            .directives
            .get(name)
            .ok_or_else(|| FieldError::new(format!("unknown directive @{name}")))
    }
    let directive_type = Object::new("__Directive")
        .description("A Directive provides a way to describe alternate runtime execution and type validation behavior in a GraphQL document.\n\nIn some cases, you need to provide options to alter GraphQL's execution behavior in ways field arguments will not suffice, such as conditionally including or skipping a field. Directives provide this by describing additional information to the executor.")
        .field(Field::new("name", "String!").resolve_sync(|ctx| Ok(Value::leaf(directive(ctx)?.name.clone()))))
        .field(Field::new("description", "String").resolve_sync(|ctx| Ok(opt_str(directive(ctx)?.description.as_deref()))))
        .field(Field::new("isRepeatable", "Boolean!").resolve_sync(|ctx| Ok(Value::leaf(directive(ctx)?.repeatable))))
        .field(
            Field::new("locations", "[__DirectiveLocation!]!")
                .resolve_sync(|ctx| Ok(Value::leaf_list(directive(ctx)?.locations.iter().cloned()))),
        )
        .field(
            Field::new("args", "[__InputValue!]!")
                .arg(Arg::new("includeDeprecated", "Boolean").default(false))
                .resolve_sync(|ctx| Ok(input_values(directive(ctx)?.args.values(), include_deprecated(ctx)?))),
        );

    vec![schema, ty, field, input_value, enum_value, directive_type]
}

/// The introspection enums.
pub(crate) fn enums() -> Vec<Enum> {
    vec![
        Enum::new("__TypeKind")
            .description("An enum describing what kind of type a given `__Type` is.")
            .values(["SCALAR", "OBJECT", "INTERFACE", "UNION", "ENUM", "INPUT_OBJECT", "LIST", "NON_NULL"]),
        Enum::new("__DirectiveLocation")
            .description("A Directive can be adjacent to many parts of the GraphQL language, a __DirectiveLocation describes one such possible adjacencies.")
            .values(DIRECTIVE_LOCATIONS.iter().copied()),
    ]
}
