//! Typed arguments: [`ResolveCtx::args_as`] deserializes a field's coerced arguments into any
//! `serde::Deserialize` type, and the [`Args`] trait lets a struct declare the arguments it reads,
//! so a field's argument list is written once, next to the struct, and checked against it when
//! the schema is built. The rules and an example are on [`Args`].

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use crate::schema::{Arg, InputValueDef, TypeDef, TypeMap};
use crate::types::TypeRef;
use crate::value::{ArgValue, FieldError};

#[cfg(doc)]
use crate::{Field, ResolveCtx};

/// A struct of field arguments that declares them: [`Field::args`] adds [`Args::arguments`] to
/// the field, and [`ResolveCtx::args_as`] reads the struct back. The argument list is written
/// once, next to the struct, instead of once in the field declaration and again in the resolver.
///
/// - GraphQL argument names are camelCase: put `#[serde(rename_all = "camelCase")]` on the struct.
/// - Arguments with a schema default always arrive (coercion applies the default), so they can be
///   plain fields (`stdin: String` for `stdin: String = ""`). A nullable argument without a
///   default may be absent: make it an `Option<_>`. A client may still pass an explicit `null`
///   to a nullable argument with a default; a plain field then fails with
///   [`ArgsError::Invalid`], an `Option<_>` reads `None`.
/// - Enums arrive as their value names: a Rust enum with unit variants named like the GraphQL
///   values (`#[serde(rename_all = "SCREAMING_SNAKE_CASE")]`), or a `String`.
/// - Input objects are nested structs (their fields camelCase too); lists are `Vec<_>`; custom
///   scalars holding JSON can be read as `serde_json::Value`.
/// - Object IDs (`<Type>ID` arguments, which arrive as [`crate::LoadedObject`]s) and sensitive
///   arguments replayed from an ID (only a digest is known) cannot go through serde. Leave them
///   out of the struct (serde ignores them) and read them with [`ResolveCtx::loaded`],
///   [`ResolveCtx::loaded_list`] or [`ResolveCtx::redacted`]; a struct field naming one fails
///   with [`ArgsError::ObjectId`] or [`ArgsError::Redacted`].
/// - Every struct field must name a declared argument (or input field): a misspelt name would
///   otherwise read as absent. `args_as` checks this on every call ([`ArgsError::Undeclared`]);
///   with [`Field::args`], [`SchemaBuilder::finish`](crate::SchemaBuilder::finish) checks it up
///   front, and also that no field names an object ID argument.
///
/// ```
/// use std::sync::Arc;
/// use dagr_gql::{Arg, Args, Field, Object, Request, RequestData, Schema, Value};
/// use serde::Deserialize;
///
/// #[derive(Clone, Default)]
/// struct Container { argv: Vec<String>, stdin: String }
///
/// /// The arguments of `Container.withExec` (the `source` ID is read with `ctx.loaded`).
/// #[derive(Deserialize)]
/// #[serde(rename_all = "camelCase")]
/// struct WithExec {
///     args: Vec<String>,
///     skip_entrypoint: bool,
///     stdin: String,
///     redirect_stdout: Option<String>,
/// }
///
/// impl Args for WithExec {
///     fn arguments() -> Vec<Arg> {
///         vec![
///             Arg::new("args", "[String!]!"),
///             Arg::new("skipEntrypoint", "Boolean").default(false),
///             Arg::new("stdin", "String").default(""),
///             Arg::new("redirectStdout", "String"),
///             Arg::new("source", "ContainerID"),
///         ]
///     }
/// }
///
/// let container = |c: Container| Value::object("Container", Arc::new(c));
/// let schema = Schema::build()
///     .object(Object::new("Query").field(
///         Field::new("container", "Container!").resolve_sync(move |_| Ok(container(Container::default()))),
///     ))
///     .object(
///         Object::new("Container")
///             .with_id()
///             .field(
///                 Field::new("withExec", "Container!")
///                     .args::<WithExec>()
///                     .resolve_sync(move |ctx| {
///                         let args: WithExec = ctx.args_as()?;
///                         let mut next = match ctx.arg_value("source") {
///                             Some(_) => ctx.loaded::<Container>("source")?.as_ref().clone(),
///                             None => ctx.parent::<Container>()?.clone(),
///                         };
///                         next.argv = args.args;
///                         next.stdin = args.stdin;
///                         Ok(container(next))
///                     }),
///             )
///             .field(Field::new("argv", "[String!]!").resolve_sync(|ctx| {
///                 Ok(Value::leaf_list(ctx.parent::<Container>()?.argv.clone()))
///             })),
///     )
///     .finish()
///     .unwrap();
///
/// let query = r#"{ container { withExec(args: ["echo", "hi"]) { argv } } }"#;
/// let response = futures::executor::block_on(schema.execute(Request::new(query), RequestData::new()));
/// assert_eq!(response.to_json(), serde_json::json!(
///     {"data": {"container": {"withExec": {"argv": ["echo", "hi"]}}}}
/// ));
/// ```
pub trait Args: DeserializeOwned {
    /// The field's arguments, in declaration order. Each field of `Self` (by its serde name)
    /// must be one of them; object ID and sensitive arguments are listed here but read outside
    /// the struct.
    fn arguments() -> Vec<Arg>;
}

/// Errors reading arguments with [`ResolveCtx::args_as`]. `field` is `Type.field`; `argument`
/// is the argument's name, followed by the path inside it for nested values
/// (`labels[1].name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// The type reads a name the field (or input object) does not declare.
    #[error("argument {argument} of {field} is not declared")]
    Undeclared {
        /// `Type.field`.
        field: String,
        /// The undeclared name, with its path.
        argument: String,
    },
    /// A value the type requires is absent (a nullable argument without a default that the
    /// request left out: read it as an `Option`).
    #[error("argument {argument} of {field} was not given")]
    Missing {
        /// `Type.field`.
        field: String,
        /// The absent argument, with its path.
        argument: String,
    },
    /// A value does not fit the Rust type.
    #[error("argument {argument} of {field}: {reason}")]
    Invalid {
        /// `Type.field`.
        field: String,
        /// The argument, with its path.
        argument: String,
        /// Why, as serde words it (e.g. "invalid type: integer `3`, expected a string").
        reason: String,
    },
    /// The value is an object loaded from an ID: read it with [`ResolveCtx::loaded`].
    #[error("argument {argument} of {field} is an object ID: read it with ResolveCtx::loaded")]
    ObjectId {
        /// `Type.field`.
        field: String,
        /// The argument, with its path.
        argument: String,
    },
    /// The value is a sensitive argument replayed from an ID, of which only the digest is known:
    /// read it with [`ResolveCtx::redacted`].
    #[error(
        "argument {argument} of {field} is sensitive and was replayed from an ID: only its digest is known (ResolveCtx::redacted)"
    )]
    Redacted {
        /// `Type.field`.
        field: String,
        /// The argument, with its path.
        argument: String,
    },
    /// The arguments as a whole do not fit the type: it is not a struct or map, or a check of
    /// its own (e.g. `#[serde(try_from = ...)]`) failed.
    #[error("arguments of {field} do not fit: {reason}")]
    Unfit {
        /// `Type.field`.
        field: String,
        /// Why, as serde words it.
        reason: String,
    },
}

impl From<ArgsError> for FieldError {
    fn from(e: ArgsError) -> FieldError {
        FieldError::new(e.to_string())
    }
}

/// Deserializes a field's coerced arguments (`declared`: the field's argument definitions, used
/// to reject struct fields that name no argument). `field` names the field (`Type.field`) for
/// errors.
pub(crate) fn deserialize_args<T: DeserializeOwned>(
    types: &TypeMap,
    declared: Option<&IndexMap<String, InputValueDef>>,
    args: &IndexMap<String, ArgValue>,
    field: impl FnOnce() -> String,
) -> Result<T, ArgsError> {
    T::deserialize(ObjectDeserializer {
        fields: args,
        declared,
        types,
    })
    .map_err(|e| e.into_args_error(field()))
}

/// The type behind [`Field::args`], recorded for the checks of `SchemaBuilder::finish`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArgsType {
    /// The Rust type name.
    pub name: &'static str,
    /// The serde names of its fields; `None` if it is not a plain struct.
    pub fields: Option<&'static [&'static str]>,
}

impl ArgsType {
    /// `T`'s name and, if it is a plain struct, its field names.
    pub(crate) fn of<T: DeserializeOwned>() -> ArgsType {
        let fields = match T::deserialize(FieldsTracer) {
            Err(Traced::Fields(fields)) => Some(fields),
            Err(Traced::NotAStruct) | Ok(_) => None,
        };
        ArgsType {
            name: std::any::type_name::<T>(),
            fields,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The deserializer.

/// A step into a nested value, for error paths.
#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug)]
enum ErrorKind {
    Invalid(String),
    Missing(&'static str),
    Undeclared(&'static str),
    ObjectId,
    Redacted,
}

/// The deserializer's error: what went wrong and where (`path` innermost first, as the error
/// bubbles up through maps and lists).
#[derive(Debug)]
struct DeError {
    kind: ErrorKind,
    path: Vec<Segment>,
}

impl DeError {
    fn new(kind: ErrorKind) -> DeError {
        DeError {
            kind,
            path: Vec::new(),
        }
    }

    fn at(mut self, segment: Segment) -> DeError {
        self.path.push(segment);
        self
    }

    fn into_args_error(self, field: String) -> ArgsError {
        let mut path = self.path;
        match self.kind {
            ErrorKind::Missing(name) | ErrorKind::Undeclared(name) => {
                path.insert(0, Segment::Key(name.to_string()));
            }
            ErrorKind::Invalid(_) | ErrorKind::ObjectId | ErrorKind::Redacted => {}
        }
        let mut argument = String::new();
        for segment in path.iter().rev() {
            match segment {
                Segment::Key(key) if argument.is_empty() => argument.push_str(key),
                Segment::Key(key) => {
                    argument.push('.');
                    argument.push_str(key);
                }
                Segment::Index(i) => argument.push_str(&format!("[{i}]")),
            }
        }
        match self.kind {
            ErrorKind::Invalid(reason) if argument.is_empty() => ArgsError::Unfit { field, reason },
            ErrorKind::Invalid(reason) => ArgsError::Invalid {
                field,
                argument,
                reason,
            },
            ErrorKind::Missing(_) => ArgsError::Missing { field, argument },
            ErrorKind::Undeclared(_) => ArgsError::Undeclared { field, argument },
            ErrorKind::ObjectId => ArgsError::ObjectId { field, argument },
            ErrorKind::Redacted => ArgsError::Redacted { field, argument },
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Invalid(reason) => f.write_str(reason),
            ErrorKind::Missing(name) => write!(f, "missing {name}"),
            ErrorKind::Undeclared(name) => write!(f, "undeclared {name}"),
            ErrorKind::ObjectId => f.write_str("object ID"),
            ErrorKind::Redacted => f.write_str("redacted"),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<M: fmt::Display>(msg: M) -> DeError {
        DeError::new(ErrorKind::Invalid(msg.to_string()))
    }

    fn missing_field(field: &'static str) -> DeError {
        DeError::new(ErrorKind::Missing(field))
    }
}

/// The input object definition a value of type `ty` has, if any.
fn input_fields<'a>(
    types: &'a TypeMap,
    ty: Option<&TypeRef>,
) -> Option<&'a IndexMap<String, InputValueDef>> {
    match types.get(ty?.base_name()) {
        Some(TypeDef::InputObject(i)) => Some(&i.fields),
        _ => None,
    }
}

/// One coerced value; `ty` is its GraphQL type (`None` inside custom scalars).
struct ValueDeserializer<'a> {
    value: &'a ArgValue,
    ty: Option<&'a TypeRef>,
    types: &'a TypeMap,
}

impl<'a> ValueDeserializer<'a> {
    fn object(&self, fields: &'a IndexMap<String, ArgValue>) -> ObjectDeserializer<'a> {
        ObjectDeserializer {
            fields,
            declared: input_fields(self.types, self.ty),
            types: self.types,
        }
    }
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            ArgValue::Null => visitor.visit_unit(),
            ArgValue::Boolean(b) => visitor.visit_bool(*b),
            ArgValue::Int(i) => visitor.visit_i64(*i),
            ArgValue::Float(f) => visitor.visit_f64(*f),
            ArgValue::String(s) | ArgValue::Enum(s) => visitor.visit_borrowed_str(s),
            ArgValue::List(items) => {
                let item_ty = match self.ty.map(TypeRef::nullable) {
                    Some(TypeRef::List(item)) => Some(&**item),
                    _ => None,
                };
                visitor.visit_seq(ItemsAccess {
                    items: items.iter().enumerate(),
                    ty: item_ty,
                    types: self.types,
                })
            }
            ArgValue::Object(fields) => self.object(fields).deserialize_any(visitor),
            ArgValue::Loaded(_) => Err(DeError::new(ErrorKind::ObjectId)),
            ArgValue::Redacted { .. } => Err(DeError::new(ErrorKind::Redacted)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            ArgValue::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            ArgValue::Null => visitor.visit_unit(),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            ArgValue::Object(values) => self
                .object(values)
                .deserialize_struct(name, fields, visitor),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            ArgValue::Enum(s) | ArgValue::String(s) => {
                visitor.visit_enum(IntoDeserializer::<DeError>::into_deserializer(s.as_str()))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit_struct seq tuple tuple_struct map identifier
    }
}

/// Named values: a field's arguments or an input object (`declared`: their definitions, if
/// known), or a custom scalar's JSON object (`declared` is `None`).
struct ObjectDeserializer<'a> {
    fields: &'a IndexMap<String, ArgValue>,
    declared: Option<&'a IndexMap<String, InputValueDef>>,
    types: &'a TypeMap,
}

impl<'a> ObjectDeserializer<'a> {
    fn access(self, wanted: Option<&'static [&'static str]>) -> FieldsAccess<'a> {
        FieldsAccess {
            entries: self.fields.iter(),
            wanted,
            declared: self.declared,
            types: self.types,
            next: None,
        }
    }
}

impl<'de> de::Deserializer<'de> for ObjectDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(self.access(None))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    /// Feeds the struct only the values it has fields for (so object IDs it leaves out are never
    /// deserialized), after checking that each of its fields is declared.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if let Some(declared) = self.declared
            && let Some(name) = fields.iter().find(|f| !declared.contains_key(**f))
        {
            return Err(DeError::new(ErrorKind::Undeclared(name)));
        }
        visitor.visit_map(self.access(Some(fields)))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map enum identifier
    }
}

struct FieldsAccess<'a> {
    entries: indexmap::map::Iter<'a, String, ArgValue>,
    /// The struct's field names; `None` for maps (every entry).
    wanted: Option<&'static [&'static str]>,
    declared: Option<&'a IndexMap<String, InputValueDef>>,
    types: &'a TypeMap,
    next: Option<(&'a String, &'a ArgValue)>,
}

impl<'de> de::MapAccess<'de> for FieldsAccess<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let wanted = self.wanted;
        let Some((key, value)) = self
            .entries
            .find(|(key, _)| wanted.is_none_or(|w| w.contains(&key.as_str())))
        else {
            return Ok(None);
        };
        self.next = Some((key, value));
        seed.deserialize(IntoDeserializer::<DeError>::into_deserializer(key.as_str()))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.next.take() else {
            return Err(de::Error::custom("value requested before its key"));
        };
        let ty = self.declared.and_then(|d| d.get(key)).map(|def| &def.ty);
        seed.deserialize(ValueDeserializer {
            value,
            ty,
            types: self.types,
        })
        .map_err(|e| e.at(Segment::Key(key.clone())))
    }
}

struct ItemsAccess<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, ArgValue>>,
    ty: Option<&'a TypeRef>,
    types: &'a TypeMap,
}

impl<'de> de::SeqAccess<'de> for ItemsAccess<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((index, value)) = self.items.next() else {
            return Ok(None);
        };
        seed.deserialize(ValueDeserializer {
            value,
            ty: self.ty,
            types: self.types,
        })
        .map(Some)
        .map_err(|e| e.at(Segment::Index(index)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a struct's field names without a value.

/// Answers every request with an error; a derived struct's `deserialize_struct` call reveals its
/// field names.
struct FieldsTracer;

#[derive(Debug)]
enum Traced {
    Fields(&'static [&'static str]),
    NotAStruct,
}

impl fmt::Display for Traced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tracing struct fields")
    }
}

impl std::error::Error for Traced {}

impl de::Error for Traced {
    fn custom<M: fmt::Display>(_msg: M) -> Traced {
        Traced::NotAStruct
    }
}

impl<'de> de::Deserializer<'de> for FieldsTracer {
    type Error = Traced;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Traced> {
        Err(Traced::NotAStruct)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Traced> {
        Err(Traced::Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}
