//! Type definitions of module code: `TypeDef` and its kinds (`ObjectTypeDef`, `FieldTypeDef`,
//! `ListTypeDef`, `ScalarTypeDef`, `InterfaceTypeDef`, `InputTypeDef`), `Function` and
//! `FunctionArg`. An SDK builds them with chained calls at registration (`typeDef.withObject(..)
//! .withFunction(function(..).withArg(..))`) and hands the module's ID back; they are plain data
//! (serializable: a module's definitions are part of its cache keys).

use dagr_gql::{Arg, Args, Enum, Field, FieldError, Object, ResolveCtx, SchemaBuilder, Value};
use serde::{Deserialize, Serialize};

use super::text;
use crate::args::null_as_default;
use crate::obj;

/// What a value of a [`TypeDef`] is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    String,
    Integer,
    Boolean,
    Void,
    Scalar(ScalarTypeDef),
    List(Box<TypeDef>),
    Object(ObjectTypeDef),
    Interface(InterfaceTypeDef),
    Input(InputTypeDef),
}

/// A type of a module's API: its kind and whether it may be null.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypeDef {
    pub kind: Kind,
    pub optional: bool,
}

impl Default for TypeDef {
    fn default() -> TypeDef {
        // Dagger's zero TypeDef has no kind; `withKind` or `with<Kind>` give it one.
        TypeDef {
            kind: Kind::Void,
            optional: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalarTypeDef {
    pub name: String,
    pub description: String,
    pub source_module_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectTypeDef {
    /// The name as the SDK gave it (the schema's name may carry the module's prefix).
    pub name: String,
    pub description: String,
    pub fields: Vec<FieldTypeDef>,
    pub functions: Vec<Function>,
    pub constructor: Option<Box<Function>>,
    pub source_module_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceTypeDef {
    pub name: String,
    pub description: String,
    pub functions: Vec<Function>,
    pub source_module_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputTypeDef {
    pub name: String,
    pub fields: Vec<FieldTypeDef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldTypeDef {
    /// As the SDK gave it; the schema serves it in lowerCamelCase.
    pub name: String,
    pub description: String,
    pub type_def: TypeDef,
}

/// A function of an object: as registered by the SDK.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// As the SDK gave it (the function call carries it back); the schema serves it in
    /// lowerCamelCase.
    pub name: String,
    pub description: String,
    pub args: Vec<FunctionArg>,
    pub return_type: TypeDef,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionArg {
    pub name: String,
    pub description: String,
    pub type_def: TypeDef,
    /// JSON text of the default value, when there is one.
    pub default_value: Option<String>,
}

impl TypeDef {
    /// The object definition, for object kinds.
    pub fn as_object(&self) -> Option<&ObjectTypeDef> {
        match &self.kind {
            Kind::Object(o) => Some(o),
            _ => None,
        }
    }

    /// How it reads in messages and `--help`: `String`, `[Int]`, `Container`, ...
    pub fn display_name(&self) -> String {
        match &self.kind {
            Kind::String => "String".into(),
            Kind::Integer => "Int".into(),
            Kind::Boolean => "Boolean".into(),
            Kind::Void => "Void".into(),
            Kind::Scalar(s) => s.name.clone(),
            Kind::List(item) => format!("[{}]", item.display_name()),
            Kind::Object(o) => o.name.clone(),
            Kind::Interface(i) => i.name.clone(),
            Kind::Input(i) => i.name.clone(),
        }
    }

    /// The name of its [`TypeDefKind`] enum value.
    fn kind_name(&self) -> &'static str {
        match &self.kind {
            Kind::String => "STRING_KIND",
            Kind::Integer => "INTEGER_KIND",
            Kind::Boolean => "BOOLEAN_KIND",
            Kind::Void => "VOID_KIND",
            Kind::Scalar(_) => "SCALAR_KIND",
            Kind::List(_) => "LIST_KIND",
            Kind::Object(_) => "OBJECT_KIND",
            Kind::Interface(_) => "INTERFACE_KIND",
            Kind::Input(_) => "INPUT_KIND",
        }
    }
}

/// `foo_bar`, `FooBar`, `foo-bar` -> `fooBar`: the schema's name of a function, field or
/// argument (Dagger's `gqlFieldName`).
pub fn lower_camel(name: &str) -> String {
    let pascal = pascal(name);
    let mut chars = pascal.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `foo_bar`, `foo-bar`, `fooBar` -> `FooBar`: the schema's name of an object.
pub fn pascal(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if c == '_' || c == '-' || c == ' ' {
            upper = true;
            continue;
        }
        if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Adds the type definition objects, `TypeDefKind`, the `JSON` scalar (`Void` comes with the
/// services), and
/// `Query.typeDef` / `Query.function`.
pub(crate) fn register(b: SchemaBuilder) -> SchemaBuilder {
    let kinds = Enum::new("TypeDefKind").values([
        "STRING_KIND",
        "INTEGER_KIND",
        "BOOLEAN_KIND",
        "SCALAR_KIND",
        "LIST_KIND",
        "OBJECT_KIND",
        "INTERFACE_KIND",
        "INPUT_KIND",
        "VOID_KIND",
    ]);
    let type_def = Object::new("TypeDef")
        .with_id()
        .field(as_kind("asInput", "InputTypeDef", |t| match &t.kind {
            Kind::Input(i) => Some(obj("InputTypeDef", i.clone())),
            _ => None,
        }))
        .field(as_kind("asInterface", "InterfaceTypeDef", |t| {
            match &t.kind {
                Kind::Interface(i) => Some(obj("InterfaceTypeDef", i.clone())),
                _ => None,
            }
        }))
        .field(as_kind("asList", "ListTypeDef", |t| match &t.kind {
            Kind::List(item) => Some(obj("ListTypeDef", (**item).clone())),
            _ => None,
        }))
        .field(as_kind("asObject", "ObjectTypeDef", |t| match &t.kind {
            Kind::Object(o) => Some(obj("ObjectTypeDef", o.clone())),
            _ => None,
        }))
        .field(as_kind("asScalar", "ScalarTypeDef", |t| match &t.kind {
            Kind::Scalar(s) => Some(obj("ScalarTypeDef", s.clone())),
            _ => None,
        }))
        .field(
            Field::new("kind", "TypeDefKind!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<TypeDef>()?.kind_name()))),
        )
        .field(
            Field::new("optional", "Boolean!")
                .resolve_sync(|ctx| Ok(Value::leaf(ctx.parent::<TypeDef>()?.optional))),
        )
        .field(with_function("withConstructor", true))
        .field(with_field())
        .field(with_function("withFunction", false))
        .field(with_named("withInterface", |name, description| {
            Kind::Interface(InterfaceTypeDef {
                name: pascal(&name),
                description,
                ..Default::default()
            })
        }))
        .field(with_kind())
        .field(with_list_of())
        .field(with_named("withObject", |name, description| {
            Kind::Object(ObjectTypeDef {
                name: pascal(&name),
                description,
                ..Default::default()
            })
        }))
        .field(with_optional())
        .field(with_named("withScalar", |name, description| {
            Kind::Scalar(ScalarTypeDef {
                name,
                description,
                source_module_name: String::new(),
            })
        }));
    let object_type_def = Object::new("ObjectTypeDef")
        .with_id()
        .field(Field::new("constructor", "Function").resolve_sync(|ctx| {
            Ok(match &ctx.parent::<ObjectTypeDef>()?.constructor {
                Some(f) => obj("Function", (**f).clone()),
                None => Value::Null,
            })
        }))
        .field(text::<ObjectTypeDef>("description", |o| {
            o.description.clone()
        }))
        .field(
            Field::new("fields", "[FieldTypeDef!]!").resolve_sync(|ctx| {
                let o = ctx.parent::<ObjectTypeDef>()?;
                Ok(list("FieldTypeDef", o.fields.iter().cloned()))
            }),
        )
        .field(Field::new("functions", "[Function!]!").resolve_sync(|ctx| {
            let o = ctx.parent::<ObjectTypeDef>()?;
            Ok(list("Function", o.functions.iter().cloned()))
        }))
        .field(text::<ObjectTypeDef>("name", |o| o.name.clone()))
        .field(text::<ObjectTypeDef>("sourceModuleName", |o| {
            o.source_module_name.clone()
        }));
    let interface_type_def = Object::new("InterfaceTypeDef")
        .with_id()
        .field(text::<InterfaceTypeDef>("description", |o| {
            o.description.clone()
        }))
        .field(Field::new("functions", "[Function!]!").resolve_sync(|ctx| {
            let o = ctx.parent::<InterfaceTypeDef>()?;
            Ok(list("Function", o.functions.iter().cloned()))
        }))
        .field(text::<InterfaceTypeDef>("name", |o| o.name.clone()))
        .field(text::<InterfaceTypeDef>("sourceModuleName", |o| {
            o.source_module_name.clone()
        }));
    let input_type_def = Object::new("InputTypeDef")
        .with_id()
        .field(
            Field::new("fields", "[FieldTypeDef!]!").resolve_sync(|ctx| {
                let o = ctx.parent::<InputTypeDef>()?;
                Ok(list("FieldTypeDef", o.fields.iter().cloned()))
            }),
        )
        .field(text::<InputTypeDef>("name", |o| o.name.clone()));
    let scalar_type_def = Object::new("ScalarTypeDef")
        .with_id()
        .field(text::<ScalarTypeDef>("description", |o| {
            o.description.clone()
        }))
        .field(text::<ScalarTypeDef>("name", |o| o.name.clone()))
        .field(text::<ScalarTypeDef>("sourceModuleName", |o| {
            o.source_module_name.clone()
        }));
    let list_type_def = Object::new("ListTypeDef").with_id().field(
        Field::new("elementTypeDef", "TypeDef!")
            .resolve_sync(|ctx| Ok(obj("TypeDef", ctx.parent::<TypeDef>()?.clone()))),
    );
    let field_type_def = Object::new("FieldTypeDef")
        .with_id()
        .field(text::<FieldTypeDef>("description", |f| {
            f.description.clone()
        }))
        .field(Field::new("name", "String!").resolve_sync(|ctx| {
            Ok(Value::leaf(lower_camel(
                &ctx.parent::<FieldTypeDef>()?.name,
            )))
        }))
        .field(Field::new("typeDef", "TypeDef!").resolve_sync(|ctx| {
            Ok(obj(
                "TypeDef",
                ctx.parent::<FieldTypeDef>()?.type_def.clone(),
            ))
        }));
    let function = Object::new("Function")
        .with_id()
        .field(Field::new("args", "[FunctionArg!]!").resolve_sync(|ctx| {
            let f = ctx.parent::<Function>()?;
            Ok(list("FunctionArg", f.args.iter().cloned()))
        }))
        .field(text::<Function>("description", |f| f.description.clone()))
        .field(
            Field::new("name", "String!")
                .resolve_sync(|ctx| Ok(Value::leaf(lower_camel(&ctx.parent::<Function>()?.name)))),
        )
        .field(Field::new("returnType", "TypeDef!").resolve_sync(|ctx| {
            Ok(obj(
                "TypeDef",
                ctx.parent::<Function>()?.return_type.clone(),
            ))
        }))
        .field(function_with_arg())
        .field(
            Field::new("withDescription", "Function!")
                .arg(Arg::new("description", "String!"))
                .resolve_sync(|ctx| {
                    let mut f = ctx.parent::<Function>()?.clone();
                    f.description = ctx.arg("description")?;
                    Ok(obj("Function", f))
                }),
        );
    let function_arg =
        Object::new("FunctionArg")
            .with_id()
            .field(Field::new("defaultValue", "JSON!").resolve_sync(|ctx| {
                let a = ctx.parent::<FunctionArg>()?;
                Ok(Value::leaf(a.default_value.clone().unwrap_or_default()))
            }))
            .field(text::<FunctionArg>("description", |a| {
                a.description.clone()
            }))
            .field(Field::new("name", "String!").resolve_sync(|ctx| {
                Ok(Value::leaf(lower_camel(&ctx.parent::<FunctionArg>()?.name)))
            }))
            .field(Field::new("typeDef", "TypeDef!").resolve_sync(|ctx| {
                Ok(obj(
                    "TypeDef",
                    ctx.parent::<FunctionArg>()?.type_def.clone(),
                ))
            }));
    b.enumeration(kinds)
        .scalar(dagr_gql::Scalar::new("JSON").description("An arbitrary JSON-encoded value."))
        .object(type_def)
        .object(object_type_def)
        .object(interface_type_def)
        .object(input_type_def)
        .object(scalar_type_def)
        .object(list_type_def)
        .object(field_type_def)
        .object(function)
        .object(function_arg)
}

/// `Query.typeDef`: an empty type definition to build on.
pub(crate) fn query_type_def() -> Field {
    Field::new("typeDef", "TypeDef!").resolve_sync(|_| Ok(obj("TypeDef", TypeDef::default())))
}

/// `Query.function(name, returnType)`: a function definition to add arguments to.
pub(crate) fn query_function() -> Field {
    Field::new("function", "Function!")
        .arg(Arg::new("name", "String!"))
        .arg(Arg::new("returnType", "TypeDefID!"))
        .resolve_sync(|ctx| {
            let name: String = ctx.arg("name")?;
            let return_type = ctx.loaded::<TypeDef>("returnType")?;
            Ok(obj(
                "Function",
                Function {
                    name,
                    description: String::new(),
                    args: Vec::new(),
                    return_type: (*return_type).clone(),
                },
            ))
        })
}

fn list<T: Send + Sync + 'static>(type_name: &str, items: impl Iterator<Item = T>) -> Value {
    Value::List(items.map(|i| obj(type_name, i)).collect())
}

/// `TypeDef.as<Kind>`: the kind's definition, or null for other kinds.
fn as_kind(name: &str, ty: &str, pick: fn(&TypeDef) -> Option<Value>) -> Field {
    Field::new(name, ty)
        .resolve_sync(move |ctx| Ok(pick(ctx.parent::<TypeDef>()?).unwrap_or(Value::Null)))
}

/// `(name: String!, description: String = "")`.
#[derive(Deserialize)]
struct NamedArgs {
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    description: String,
}

impl Args for NamedArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("description", "String").default(""),
            Arg::new("name", "String!"),
        ]
    }
}

/// `TypeDef.withObject` / `withInterface` / `withScalar`: the type becomes that kind.
fn with_named(field: &str, kind: fn(String, String) -> Kind) -> Field {
    Field::new(field, "TypeDef!")
        .args::<NamedArgs>()
        .resolve_sync(move |ctx| {
            let NamedArgs { name, description } = ctx.args_as()?;
            let mut t = ctx.parent::<TypeDef>()?.clone();
            t.kind = kind(name, description);
            Ok(obj("TypeDef", t))
        })
}

fn with_kind() -> Field {
    Field::new("withKind", "TypeDef!")
        .arg(Arg::new("kind", "TypeDefKind!"))
        .resolve_sync(|ctx| {
            let kind: String = ctx.arg("kind")?;
            let mut t = ctx.parent::<TypeDef>()?.clone();
            t.kind = match kind.as_str() {
                "STRING_KIND" => Kind::String,
                "INTEGER_KIND" => Kind::Integer,
                "BOOLEAN_KIND" => Kind::Boolean,
                "VOID_KIND" => Kind::Void,
                other => {
                    return Err(FieldError::new(format!(
                        "withKind({other}): this kind needs its definition; use withObject, withListOf, withScalar or withInterface"
                    )));
                }
            };
            Ok(obj("TypeDef", t))
        })
}

fn with_optional() -> Field {
    Field::new("withOptional", "TypeDef!")
        .arg(Arg::new("optional", "Boolean!"))
        .resolve_sync(|ctx| {
            let mut t = ctx.parent::<TypeDef>()?.clone();
            t.optional = ctx.arg("optional")?;
            Ok(obj("TypeDef", t))
        })
}

fn with_list_of() -> Field {
    Field::new("withListOf", "TypeDef!")
        .arg(Arg::new("elementType", "TypeDefID!"))
        .resolve_sync(|ctx| {
            let item = ctx.loaded::<TypeDef>("elementType")?;
            let mut t = ctx.parent::<TypeDef>()?.clone();
            t.kind = Kind::List(Box::new((*item).clone()));
            Ok(obj("TypeDef", t))
        })
}

/// The object or interface definition a `with...` call adds to.
fn object_mut<'a>(t: &'a mut TypeDef, field: &str) -> Result<&'a mut ObjectTypeDef, FieldError> {
    match &mut t.kind {
        Kind::Object(o) => Ok(o),
        _ => Err(FieldError::new(format!(
            "{field}: the type definition is not an object (call withObject first)"
        ))),
    }
}

/// `withFunction(function)` / `withConstructor(function)`.
fn with_function(field: &'static str, constructor: bool) -> Field {
    Field::new(field, "TypeDef!")
        .arg(Arg::new("function", "FunctionID!"))
        .resolve_sync(move |ctx| {
            let function = (*ctx.loaded::<Function>("function")?).clone();
            let mut t = ctx.parent::<TypeDef>()?.clone();
            if let Kind::Interface(i) = &mut t.kind
                && !constructor
            {
                i.functions.push(function);
                return Ok(obj("TypeDef", t));
            }
            let o = object_mut(&mut t, field)?;
            if constructor {
                o.constructor = Some(Box::new(function));
            } else {
                if o.functions.iter().any(|f| f.name == function.name) {
                    return Err(FieldError::new(format!(
                        "object {} already has a function {}",
                        o.name, function.name
                    )));
                }
                o.functions.push(function);
            }
            Ok(obj("TypeDef", t))
        })
}

/// `TypeDef.withField(name, typeDef, description)`.
fn with_field() -> Field {
    Field::new("withField", "TypeDef!")
        .arg(Arg::new("description", "String").default(""))
        .arg(Arg::new("name", "String!"))
        .arg(Arg::new("typeDef", "TypeDefID!"))
        .resolve_sync(|ctx| {
            let name: String = ctx.arg("name")?;
            let description: Option<String> = ctx.arg("description")?;
            let type_def = (*ctx.loaded::<TypeDef>("typeDef")?).clone();
            let mut t = ctx.parent::<TypeDef>()?.clone();
            let o = object_mut(&mut t, "withField")?;
            o.fields.push(FieldTypeDef {
                name,
                description: description.unwrap_or_default(),
                type_def,
            });
            Ok(obj("TypeDef", t))
        })
}

/// `Function.withArg(name, typeDef, description, defaultValue)`.
fn function_with_arg() -> Field {
    Field::new("withArg", "Function!")
        .arg(Arg::new("defaultValue", "JSON"))
        .arg(Arg::new("description", "String").default(""))
        .arg(Arg::new("name", "String!"))
        .arg(Arg::new("typeDef", "TypeDefID!"))
        .resolve_sync(|ctx: &ResolveCtx| {
            let name: String = ctx.arg("name")?;
            let description: Option<String> = ctx.arg("description")?;
            let default_value: Option<String> = ctx.arg("defaultValue")?;
            if let Some(text) = &default_value {
                serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
                    FieldError::new(format!("default value of argument {name} is not JSON: {e}"))
                })?;
            }
            let type_def = (*ctx.loaded::<TypeDef>("typeDef")?).clone();
            let mut f = ctx.parent::<Function>()?.clone();
            f.args.push(FunctionArg {
                name,
                description: description.unwrap_or_default(),
                type_def,
                default_value,
            });
            Ok(obj("Function", f))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_convert_like_dagger() {
        assert_eq!(lower_camel("container_echo"), "containerEcho");
        assert_eq!(lower_camel("ContainerEcho"), "containerEcho");
        assert_eq!(lower_camel("hello"), "hello");
        assert_eq!(pascal("my-module"), "MyModule");
        assert_eq!(pascal("my_module"), "MyModule");
    }
}
