//! Compiling a [`SchemaBuilder`] into a [`Schema`]: names, duplicates, type references and
//! input/output kinds are checked, the built-in scalars, directives and introspection types are
//! added, `with_id` types get their ID scalar, `id` field and `load<Type>FromID` field, and default
//! values are coerced once every type is known.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value as Json;

use super::builder::{Arg, Directive, Field, Object, SchemaBuilder};
use super::{
    DirectiveDef, EnumDef, EnumValueDef, FieldDef, InputObjectDef, InputValueDef, ObjectDef,
    ScalarDef, ScalarKind, Schema, SchemaInner, TypeDef, TypeMap,
};
use crate::args::ArgsType;
use crate::coerce;
use crate::introspection;
use crate::types::{TypeRef, is_name};
use crate::value::Value;

/// Errors building a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// Two types share a name.
    #[error("type {name} is defined twice")]
    DuplicateType {
        /// The type name.
        name: String,
    },
    /// A field, argument, enum value or input field is defined twice.
    #[error("{owner} defines {name} twice")]
    DuplicateMember {
        /// `Type`, `Type.field` or `@directive`.
        owner: String,
        /// The member name.
        name: String,
    },
    /// A name is not a valid GraphQL name, or uses the reserved `__` prefix.
    #[error("invalid name {name:?} in {owner}")]
    InvalidName {
        /// Where it is.
        owner: String,
        /// The name.
        name: String,
    },
    /// A type reference does not parse.
    #[error("{owner}: {source}")]
    BadTypeRef {
        /// Where it is.
        owner: String,
        /// The parse error.
        source: crate::types::TypeRefError,
    },
    /// A type reference names a type that does not exist.
    #[error("{owner} refers to unknown type {name}")]
    UnknownType {
        /// Where it is.
        owner: String,
        /// The missing type.
        name: String,
    },
    /// An input type is used as output or an output type as input.
    #[error("{owner} uses {name} which is not an {expected} type")]
    WrongTypeKind {
        /// Where it is.
        owner: String,
        /// The type.
        name: String,
        /// `input` or `output`.
        expected: &'static str,
    },
    /// The `Query` object type is missing.
    #[error("schema has no Query object type")]
    NoQueryType,
    /// A field has no resolver.
    #[error("field {owner}.{field} has no resolver")]
    NoResolver {
        /// The object type.
        owner: String,
        /// The field.
        field: String,
    },
    /// A default value does not fit its type.
    #[error("default value of {owner}: {reason}")]
    BadDefault {
        /// `Type.field(arg)` or `Input.field`.
        owner: String,
        /// Why.
        reason: String,
    },
    /// A type has no fields or values.
    #[error("type {name} has no {what}")]
    Empty {
        /// The type.
        name: String,
        /// `fields` or `values`.
        what: &'static str,
    },
    /// A directive location is not a standard type-system location.
    #[error("directive @{name} has unknown location {location}")]
    BadDirectiveLocation {
        /// The directive.
        name: String,
        /// The location.
        location: String,
    },
    /// A type given to [`Field::args`] is not a plain struct, so its fields cannot be checked.
    #[error("arguments type {type_name} of {owner} is not a plain struct")]
    ArgsNotStruct {
        /// `Type.field`.
        owner: String,
        /// The Rust type.
        type_name: String,
    },
    /// A field of a type given to [`Field::args`] names no argument of the field.
    #[error("arguments type {type_name} of {owner} reads {name}, which {owner} does not declare")]
    ArgsUndeclared {
        /// `Type.field`.
        owner: String,
        /// The Rust type.
        type_name: String,
        /// The struct field's (serde) name.
        name: String,
    },
    /// A field of a type given to [`Field::args`] names an object ID argument, which serde
    /// cannot read: leave it out and read it with `ResolveCtx::loaded`.
    #[error(
        "arguments type {type_name} of {owner} reads the object ID argument {name}: read it with ResolveCtx::loaded instead"
    )]
    ArgsObjectId {
        /// `Type.field`.
        owner: String,
        /// The Rust type.
        type_name: String,
        /// The struct field's (serde) name.
        name: String,
    },
    /// `with_id()` types need their own `id` field: the user defined one.
    #[error("type {name} is marked with_id and must not define its own id field")]
    IdFieldClash {
        /// The type.
        name: String,
    },
}

pub(crate) const DIRECTIVE_LOCATIONS: &[&str] = &[
    "QUERY",
    "MUTATION",
    "SUBSCRIPTION",
    "FIELD",
    "FRAGMENT_DEFINITION",
    "FRAGMENT_SPREAD",
    "INLINE_FRAGMENT",
    "VARIABLE_DEFINITION",
    "SCHEMA",
    "SCALAR",
    "OBJECT",
    "FIELD_DEFINITION",
    "ARGUMENT_DEFINITION",
    "INTERFACE",
    "UNION",
    "ENUM",
    "ENUM_VALUE",
    "INPUT_OBJECT",
    "INPUT_FIELD_DEFINITION",
];

impl SchemaBuilder {
    /// Checks everything and builds the schema.
    pub fn finish(self) -> Result<Schema, SchemaError> {
        let SchemaBuilder {
            mut objects,
            enums,
            inputs,
            scalars,
            directives,
            limits,
        } = self;
        let mut pending: Vec<PendingInputs> = Vec::new();
        let mut types: TypeMap = IndexMap::new();
        let insert = |types: &mut TypeMap, def: TypeDef| -> Result<(), SchemaError> {
            let name = def.name().to_string();
            if types.insert(name.clone(), def).is_some() {
                return Err(SchemaError::DuplicateType { name });
            }
            Ok(())
        };
        for (name, kind, description) in builtin_scalars() {
            insert(
                &mut types,
                TypeDef::Scalar(ScalarDef {
                    name: name.into(),
                    description: Some(description.into()),
                    specified_by: None,
                    kind,
                }),
            )?;
        }
        for scalar in scalars {
            check_name(&scalar.name, "scalar", false)?;
            insert(
                &mut types,
                TypeDef::Scalar(ScalarDef {
                    name: scalar.name,
                    description: scalar.description,
                    specified_by: scalar.specified_by,
                    kind: ScalarKind::Custom,
                }),
            )?;
        }
        // ID scalars, id fields and load<Type>FromID fields.
        let mut load_fields = Vec::new();
        for object in objects.iter_mut().filter(|o| o.with_id) {
            let id_scalar = format!("{}ID", object.name);
            if object.fields.iter().any(|f| f.name == "id") {
                return Err(SchemaError::IdFieldClash {
                    name: object.name.clone(),
                });
            }
            insert(
                &mut types,
                TypeDef::Scalar(ScalarDef {
                    name: id_scalar.clone(),
                    description: Some(format!(
                        "The `{id_scalar}` scalar type represents an identifier for an object of type {}.",
                        object.name
                    )),
                    specified_by: None,
                    kind: ScalarKind::ObjectId(object.name.clone()),
                }),
            )?;
            object.fields.insert(
                0,
                Field::new("id", &format!("{id_scalar}!"))
                    .description(&format!("A unique identifier for this {}.", object.name))
                    .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent_chain().id()))),
            );
            load_fields.push(
                Field::new(
                    &format!("load{}FromID", object.name),
                    &format!("{}!", object.name),
                )
                .description(&format!("Load a {} from its ID.", object.name))
                .arg(Arg::new("id", &format!("{id_scalar}!")))
                .resolve_sync(|ctx| ctx.loaded_arg_as_value("id")),
            );
        }
        let mut saw_query = false;
        for mut object in objects {
            check_name(&object.name, "object", false)?;
            if object.name == "Query" {
                saw_query = true;
                object.fields.append(&mut load_fields);
                object.fields.extend(introspection::query_fields());
            }
            let def = build_object(object, false, &types, &mut pending)?;
            insert(&mut types, TypeDef::Object(def))?;
        }
        if !saw_query {
            return Err(SchemaError::NoQueryType);
        }
        for object in introspection::objects() {
            let def = build_object(object, true, &types, &mut pending)?;
            insert(&mut types, TypeDef::Object(def))?;
        }
        let mut all_enums = enums;
        all_enums.extend(introspection::enums());
        for e in all_enums {
            let internal = e.name.starts_with("__");
            check_name(&e.name, "enum", internal)?;
            if e.values.is_empty() {
                return Err(SchemaError::Empty {
                    name: e.name,
                    what: "values",
                });
            }
            let mut values = IndexMap::new();
            for v in e.values {
                check_name(&v.name, &e.name, false)?;
                if matches!(v.name.as_str(), "true" | "false" | "null") {
                    return Err(SchemaError::InvalidName {
                        owner: e.name.clone(),
                        name: v.name,
                    });
                }
                let name = v.name.clone();
                let def = EnumValueDef {
                    name: v.name,
                    description: v.description,
                    deprecation: v.deprecation,
                };
                if values.insert(name.clone(), def).is_some() {
                    return Err(SchemaError::DuplicateMember {
                        owner: e.name.clone(),
                        name,
                    });
                }
            }
            insert(
                &mut types,
                TypeDef::Enum(EnumDef {
                    name: e.name,
                    description: e.description,
                    values,
                }),
            )?;
        }
        for input in inputs {
            check_name(&input.name, "input object", false)?;
            if input.fields.is_empty() {
                return Err(SchemaError::Empty {
                    name: input.name,
                    what: "fields",
                });
            }
            let owner = input.name.clone();
            let (fields, raw) = build_input_values(&owner, input.fields)?;
            pending.push(PendingInputs::InputObject(owner.clone(), raw));
            insert(
                &mut types,
                TypeDef::InputObject(InputObjectDef {
                    name: input.name,
                    description: input.description,
                    fields,
                }),
            )?;
        }
        let mut directive_defs = IndexMap::new();
        let mut all_directives = builtin_directives();
        all_directives.extend(directives);
        for d in all_directives {
            check_name(&d.name, "directive", false)?;
            for location in &d.locations {
                if !DIRECTIVE_LOCATIONS.contains(&location.as_str()) {
                    return Err(SchemaError::BadDirectiveLocation {
                        name: d.name.clone(),
                        location: location.clone(),
                    });
                }
            }
            let owner = format!("@{}", d.name);
            let (args, raw) = build_input_values(&owner, d.args)?;
            pending.push(PendingInputs::Directive(d.name.clone(), raw));
            let name = d.name.clone();
            let def = DirectiveDef {
                name: d.name,
                description: d.description,
                locations: d.locations,
                args,
                repeatable: d.repeatable,
            };
            if directive_defs.insert(name.clone(), def).is_some() {
                return Err(SchemaError::DuplicateMember {
                    owner: "schema".into(),
                    name: format!("@{name}"),
                });
            }
        }
        types.sort_keys();
        check_type_refs(&types, &directive_defs)?;
        resolve_defaults(&mut types, &mut directive_defs, pending)?;
        Ok(Schema {
            inner: Arc::new(SchemaInner {
                types,
                directives: directive_defs,
                limits,
                doc_cache: parking_lot::Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Raw JSON defaults waiting to be coerced once all types are known.
enum PendingInputs {
    Field(String, String, Vec<(String, Json)>),
    InputObject(String, Vec<(String, Json)>),
    Directive(String, Vec<(String, Json)>),
}

fn builtin_scalars() -> Vec<(&'static str, ScalarKind, &'static str)> {
    vec![
        (
            "String",
            ScalarKind::String,
            "The `String` scalar type represents textual data, represented as UTF-8 character sequences. The String type is most often used by GraphQL to represent free-form human-readable text.",
        ),
        (
            "Int",
            ScalarKind::Int,
            "The `Int` scalar type represents non-fractional signed whole numeric values.",
        ),
        (
            "Float",
            ScalarKind::Float,
            "The `Float` scalar type represents signed double-precision fractional values as specified by [IEEE 754](https://en.wikipedia.org/wiki/IEEE_floating_point).",
        ),
        (
            "Boolean",
            ScalarKind::Boolean,
            "The `Boolean` scalar type represents `true` or `false`.",
        ),
        (
            "ID",
            ScalarKind::Id,
            "The `ID` scalar type represents a unique identifier, often used to refetch an object or as key for a cache. The ID type appears in a JSON response as a String; however, it is not intended to be human-readable. When expected as an input type, any string (such as `\"4\"`) or integer (such as `4`) input value will be accepted as an ID.",
        ),
    ]
}

fn builtin_directives() -> Vec<Directive> {
    vec![
        Directive::new("include", &["FIELD", "FRAGMENT_SPREAD", "INLINE_FRAGMENT"])
            .description("Directs the executor to include this field or fragment only when the `if` argument is true.")
            .arg(Arg::new("if", "Boolean!").description("Included when true.")),
        Directive::new("skip", &["FIELD", "FRAGMENT_SPREAD", "INLINE_FRAGMENT"])
            .description("Directs the executor to skip this field or fragment when the `if` argument is true.")
            .arg(Arg::new("if", "Boolean!").description("Skipped when true.")),
        Directive::new(
            "deprecated",
            &["FIELD_DEFINITION", "ARGUMENT_DEFINITION", "INPUT_FIELD_DEFINITION", "ENUM_VALUE"],
        )
        .description("Marks an element of a GraphQL schema as no longer supported.")
        .arg(
            Arg::new("reason", "String")
                .description("Explains why this element was deprecated, usually also including a suggestion for how to access supported similar data. Formatted using the Markdown syntax, as specified by [CommonMark](https://commonmark.org/).")
                .default("No longer supported"),
        ),
        Directive::new("specifiedBy", &["SCALAR"])
            .description("Exposes a URL that specifies the behavior of this scalar.")
            .arg(Arg::new("url", "String!").description("The URL that specifies the behavior of this scalar.")),
    ]
}

fn check_name(name: &str, owner: &str, internal: bool) -> Result<(), SchemaError> {
    if !is_name(name) || (!internal && name.starts_with("__")) {
        return Err(SchemaError::InvalidName {
            owner: owner.into(),
            name: name.into(),
        });
    }
    Ok(())
}

fn parse_ty(owner: &str, text: &str) -> Result<TypeRef, SchemaError> {
    TypeRef::parse(text).map_err(|source| SchemaError::BadTypeRef {
        owner: owner.into(),
        source,
    })
}

type RawDefaults = Vec<(String, Json)>;

fn build_input_values(
    owner: &str,
    args: Vec<Arg>,
) -> Result<(IndexMap<String, InputValueDef>, RawDefaults), SchemaError> {
    let mut out = IndexMap::new();
    let mut raw = Vec::new();
    for arg in args {
        check_name(&arg.name, owner, false)?;
        let ty = parse_ty(&format!("{owner}({})", arg.name), &arg.ty)?;
        if let Some(default) = arg.default {
            raw.push((arg.name.clone(), default));
        }
        let name = arg.name.clone();
        let def = InputValueDef {
            name: arg.name,
            description: arg.description,
            ty,
            default: None,
            deprecation: arg.deprecation,
            sensitive: arg.sensitive,
        };
        if out.insert(name.clone(), def).is_some() {
            return Err(SchemaError::DuplicateMember {
                owner: owner.into(),
                name,
            });
        }
    }
    Ok((out, raw))
}

/// Builds an object type; `types` must already hold the `<Type>ID` scalars (for
/// [`check_args_type`]).
fn build_object(
    object: Object,
    internal: bool,
    types: &TypeMap,
    pending: &mut Vec<PendingInputs>,
) -> Result<ObjectDef, SchemaError> {
    check_name(&object.name, "object", internal)?;
    if object.fields.is_empty() {
        return Err(SchemaError::Empty {
            name: object.name,
            what: "fields",
        });
    }
    let mut fields = IndexMap::new();
    for field in object.fields {
        let hidden = field.name.starts_with("__");
        check_name(&field.name, &object.name, internal || hidden)?;
        let owner = format!("{}.{}", object.name, field.name);
        let ty = parse_ty(&owner, &field.ty)?;
        let (args, raw) = build_input_values(&owner, field.args)?;
        for args_type in &field.args_types {
            check_args_type(&owner, &args, args_type, types)?;
        }
        pending.push(PendingInputs::Field(
            object.name.clone(),
            field.name.clone(),
            raw,
        ));
        let resolver = field.resolver.ok_or_else(|| SchemaError::NoResolver {
            owner: object.name.clone(),
            field: field.name.clone(),
        })?;
        let name = field.name.clone();
        let does_work = field.does_work;
        let def = FieldDef {
            name: field.name,
            description: field.description,
            ty,
            args,
            deprecation: field.deprecation,
            resolver,
            does_work,
            hidden,
            scope: field.scope,
        };
        if fields.insert(name.clone(), def).is_some() {
            return Err(SchemaError::DuplicateMember {
                owner: object.name.clone(),
                name,
            });
        }
    }
    Ok(ObjectDef {
        name: object.name,
        description: object.description,
        fields,
    })
}

/// Checks a type given to `Field::args` against the field's arguments: a plain struct whose
/// fields each name an argument that is not an object ID.
fn check_args_type(
    owner: &str,
    args: &IndexMap<String, InputValueDef>,
    args_type: &ArgsType,
    types: &TypeMap,
) -> Result<(), SchemaError> {
    let Some(fields) = args_type.fields else {
        return Err(SchemaError::ArgsNotStruct {
            owner: owner.into(),
            type_name: args_type.name.into(),
        });
    };
    for name in fields {
        let Some(arg) = args.get(*name) else {
            return Err(SchemaError::ArgsUndeclared {
                owner: owner.into(),
                type_name: args_type.name.into(),
                name: (*name).into(),
            });
        };
        if let Some(TypeDef::Scalar(ScalarDef {
            kind: ScalarKind::ObjectId(_),
            ..
        })) = types.get(arg.ty.base_name())
        {
            return Err(SchemaError::ArgsObjectId {
                owner: owner.into(),
                type_name: args_type.name.into(),
                name: (*name).into(),
            });
        }
    }
    Ok(())
}

fn check_type_refs(
    types: &TypeMap,
    directives: &IndexMap<String, DirectiveDef>,
) -> Result<(), SchemaError> {
    let check = |owner: String, ty: &TypeRef, input: bool| -> Result<(), SchemaError> {
        let name = ty.base_name();
        let def = types.get(name).ok_or_else(|| SchemaError::UnknownType {
            owner: owner.clone(),
            name: name.into(),
        })?;
        let ok = if input {
            def.is_input()
        } else {
            def.is_output()
        };
        if !ok {
            return Err(SchemaError::WrongTypeKind {
                owner,
                name: name.into(),
                expected: if input { "input" } else { "output" },
            });
        }
        Ok(())
    };
    for def in types.values() {
        match def {
            TypeDef::Object(o) => {
                for f in o.fields.values() {
                    check(format!("{}.{}", o.name, f.name), &f.ty, false)?;
                    for a in f.args.values() {
                        check(format!("{}.{}({})", o.name, f.name, a.name), &a.ty, true)?;
                    }
                }
            }
            TypeDef::InputObject(i) => {
                for f in i.fields.values() {
                    check(format!("{}.{}", i.name, f.name), &f.ty, true)?;
                }
            }
            TypeDef::Scalar(_) | TypeDef::Enum(_) => {}
        }
    }
    for d in directives.values() {
        for a in d.args.values() {
            check(format!("@{}({})", d.name, a.name), &a.ty, true)?;
        }
    }
    Ok(())
}

fn resolve_defaults(
    types: &mut TypeMap,
    directives: &mut IndexMap<String, DirectiveDef>,
    pending: Vec<PendingInputs>,
) -> Result<(), SchemaError> {
    // Input object field defaults first (twice, so defaults may use input objects whose own
    // field defaults come later in the list), then arguments.
    let (input_pending, other): (Vec<_>, Vec<_>) = pending
        .into_iter()
        .partition(|p| matches!(p, PendingInputs::InputObject(..)));
    for _round in 0..2 {
        for p in &input_pending {
            let PendingInputs::InputObject(type_name, raw) = p else {
                continue;
            };
            for (field, json) in raw {
                let owner = format!("{type_name}.{field}");
                let ty = match types.get(type_name) {
                    Some(TypeDef::InputObject(i)) => i.fields.get(field).map(|f| f.ty.clone()),
                    _ => None,
                };
                let Some(ty) = ty else { continue };
                let value = coerce::coerce_json(types, json, &ty).map_err(|reason| {
                    SchemaError::BadDefault {
                        owner: owner.clone(),
                        reason,
                    }
                })?;
                if let Some(TypeDef::InputObject(i)) = types.get_mut(type_name)
                    && let Some(f) = i.fields.get_mut(field)
                {
                    f.default = Some(value);
                }
            }
        }
    }
    for p in other {
        match p {
            PendingInputs::Field(type_name, field, raw) => {
                for (arg, json) in raw {
                    let owner = format!("{type_name}.{field}({arg})");
                    let ty = match types.get(&type_name) {
                        Some(TypeDef::Object(o)) => o
                            .fields
                            .get(&field)
                            .and_then(|f| f.args.get(&arg))
                            .map(|a| a.ty.clone()),
                        _ => None,
                    };
                    let Some(ty) = ty else { continue };
                    let value = coerce::coerce_json(types, &json, &ty).map_err(|reason| {
                        SchemaError::BadDefault {
                            owner: owner.clone(),
                            reason,
                        }
                    })?;
                    if let Some(TypeDef::Object(o)) = types.get_mut(&type_name)
                        && let Some(a) = o.fields.get_mut(&field).and_then(|f| f.args.get_mut(&arg))
                    {
                        a.default = Some(value);
                    }
                }
            }
            PendingInputs::Directive(name, raw) => {
                for (arg, json) in raw {
                    let owner = format!("@{name}({arg})");
                    let Some(ty) = directives
                        .get(&name)
                        .and_then(|d| d.args.get(&arg))
                        .map(|a| a.ty.clone())
                    else {
                        continue;
                    };
                    let value = coerce::coerce_json(types, &json, &ty).map_err(|reason| {
                        SchemaError::BadDefault {
                            owner: owner.clone(),
                            reason,
                        }
                    })?;
                    if let Some(a) = directives.get_mut(&name).and_then(|d| d.args.get_mut(&arg)) {
                        a.default = Some(value);
                    }
                }
            }
            PendingInputs::InputObject(..) => {}
        }
    }
    Ok(())
}
