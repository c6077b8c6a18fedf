//! Building a schema from Rust ([`SchemaBuilder`], [`Object`], [`Field`], [`Arg`], [`Enum`],
//! [`InputObject`], [`Scalar`], [`Directive`]) and printing it as SDL.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::coerce;
use crate::exec::ResolveCtx;
use crate::introspection;
use crate::types::{TypeRef, is_name};
use crate::value::{ArgValue, FieldError, Value, write_string_literal};

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
    /// `with_id()` types need their own `id` field: the user defined one.
    #[error("type {name} is marked with_id and must not define its own id field")]
    IdFieldClash {
        /// The type.
        name: String,
    },
}

/// The boxed future of a resolver.
pub type ResolveFuture = BoxFuture<'static, Result<Value, FieldError>>;

/// A field resolver: async, given the resolution context.
pub type Resolver = Arc<dyn Fn(ResolveCtx) -> ResolveFuture + Send + Sync>;

/// Limits applied to every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum query document size in bytes.
    pub max_document_bytes: usize,
    /// Maximum nesting depth of selection sets (fragments expanded). Execution recurses per
    /// level: the default fits a 2 MiB stack (tokio's worker threads) even in debug builds.
    pub max_depth: usize,
    /// Maximum number of aliased fields in a document.
    pub max_aliases: usize,
    /// Maximum number of field selections once fragments are expanded.
    pub max_fields: usize,
    /// How many parsed and validated documents the schema keeps (0 disables the cache).
    pub max_cached_documents: usize,
    /// Larger documents are validated every time instead of being cached.
    pub max_cached_document_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_document_bytes: 4 << 20,
            max_depth: 200,
            max_aliases: 5_000,
            max_fields: 50_000,
            max_cached_documents: 512,
            max_cached_document_bytes: 64 << 10,
        }
    }
}

/// An argument of a field or directive, or a field of an input object.
#[derive(Clone)]
pub struct Arg {
    name: String,
    ty: String,
    description: Option<String>,
    default: Option<Json>,
    deprecation: Option<String>,
    sensitive: bool,
}

impl Arg {
    /// An argument `name` of type `ty` written in GraphQL syntax (e.g. `"[String!]!"`).
    pub fn new(name: &str, ty: &str) -> Arg {
        Arg {
            name: name.into(),
            ty: ty.into(),
            description: None,
            default: None,
            deprecation: None,
            sensitive: false,
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> Arg {
        self.description = Some(text.into());
        self
    }

    /// Sets the default value, given as JSON (enum values as strings); checked against the type by
    /// [`SchemaBuilder::finish`].
    pub fn default(mut self, value: impl Into<Json>) -> Arg {
        self.default = Some(value.into());
        self
    }

    /// Marks the argument deprecated.
    pub fn deprecated(mut self, reason: &str) -> Arg {
        self.deprecation = Some(reason.into());
        self
    }

    /// Marks the argument sensitive: call chains (IDs) record only a digest of its value.
    pub fn sensitive(mut self) -> Arg {
        self.sensitive = true;
        self
    }
}

/// A field of an object type.
#[derive(Clone)]
pub struct Field {
    name: String,
    ty: String,
    description: Option<String>,
    deprecation: Option<String>,
    args: Vec<Arg>,
    resolver: Option<Resolver>,
}

impl Field {
    /// A field `name` of output type `ty` written in GraphQL syntax (e.g. `"Container!"`).
    pub fn new(name: &str, ty: &str) -> Field {
        Field {
            name: name.into(),
            ty: ty.into(),
            description: None,
            deprecation: None,
            args: Vec::new(),
            resolver: None,
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> Field {
        self.description = Some(text.into());
        self
    }

    /// Marks the field deprecated.
    pub fn deprecated(mut self, reason: &str) -> Field {
        self.deprecation = Some(reason.into());
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: Arg) -> Field {
        self.args.push(arg);
        self
    }

    /// Sets the async resolver.
    pub fn resolve<F, Fut>(mut self, resolver: F) -> Field
    where
        F: Fn(ResolveCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, FieldError>> + Send + 'static,
    {
        self.resolver = Some(Arc::new(move |ctx| Box::pin(resolver(ctx))));
        self
    }

    /// Sets a synchronous resolver.
    pub fn resolve_sync<F>(mut self, resolver: F) -> Field
    where
        F: Fn(&ResolveCtx) -> Result<Value, FieldError> + Send + Sync + 'static,
    {
        self.resolver = Some(Arc::new(move |ctx| {
            Box::pin(futures::future::ready(resolver(&ctx)))
        }));
        self
    }
}

/// An object type.
#[derive(Clone)]
pub struct Object {
    name: String,
    description: Option<String>,
    fields: Vec<Field>,
    with_id: bool,
}

impl Object {
    /// An object type named `name`.
    pub fn new(name: &str) -> Object {
        Object {
            name: name.into(),
            description: None,
            fields: Vec::new(),
            with_id: false,
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> Object {
        self.description = Some(text.into());
        self
    }

    /// Adds a field.
    pub fn field(mut self, field: Field) -> Object {
        self.fields.push(field);
        self
    }

    /// Gives the type an executor-answered `id: <Name>ID!` field, an `<Name>ID` scalar, a
    /// `load<Name>FromID(id: <Name>ID!): <Name>!` field on `Query`, and makes `<Name>ID` arguments
    /// receive the loaded object.
    pub fn with_id(mut self) -> Object {
        self.with_id = true;
        self
    }
}

/// A value of an enum type.
#[derive(Clone)]
pub struct EnumValue {
    name: String,
    description: Option<String>,
    deprecation: Option<String>,
}

impl EnumValue {
    /// A value named `name`.
    pub fn new(name: &str) -> EnumValue {
        EnumValue {
            name: name.into(),
            description: None,
            deprecation: None,
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> EnumValue {
        self.description = Some(text.into());
        self
    }

    /// Marks the value deprecated.
    pub fn deprecated(mut self, reason: &str) -> EnumValue {
        self.deprecation = Some(reason.into());
        self
    }
}

/// An enum type.
#[derive(Clone)]
pub struct Enum {
    name: String,
    description: Option<String>,
    values: Vec<EnumValue>,
}

impl Enum {
    /// An enum type named `name`.
    pub fn new(name: &str) -> Enum {
        Enum {
            name: name.into(),
            description: None,
            values: Vec::new(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> Enum {
        self.description = Some(text.into());
        self
    }

    /// Adds a value.
    pub fn value(mut self, value: EnumValue) -> Enum {
        self.values.push(value);
        self
    }

    /// Adds plain values by name.
    pub fn values<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Enum {
        self.values.extend(names.into_iter().map(EnumValue::new));
        self
    }
}

/// An input object type.
#[derive(Clone)]
pub struct InputObject {
    name: String,
    description: Option<String>,
    fields: Vec<Arg>,
}

impl InputObject {
    /// An input object type named `name`.
    pub fn new(name: &str) -> InputObject {
        InputObject {
            name: name.into(),
            description: None,
            fields: Vec::new(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> InputObject {
        self.description = Some(text.into());
        self
    }

    /// Adds a field (an input value, described like an argument).
    pub fn field(mut self, field: Arg) -> InputObject {
        self.fields.push(field);
        self
    }
}

/// A custom scalar type; its values are passed through as JSON.
#[derive(Clone)]
pub struct Scalar {
    name: String,
    description: Option<String>,
    specified_by: Option<String>,
}

impl Scalar {
    /// A custom scalar named `name`.
    pub fn new(name: &str) -> Scalar {
        Scalar {
            name: name.into(),
            description: None,
            specified_by: None,
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> Scalar {
        self.description = Some(text.into());
        self
    }

    /// Sets the `@specifiedBy(url:)` URL.
    pub fn specified_by(mut self, url: &str) -> Scalar {
        self.specified_by = Some(url.into());
        self
    }
}

/// An extra directive declaration (listed in introspection and SDL; never applied by the executor).
#[derive(Clone)]
pub struct Directive {
    name: String,
    description: Option<String>,
    locations: Vec<String>,
    args: Vec<Arg>,
    repeatable: bool,
}

impl Directive {
    /// A directive `@name` valid at `locations` (standard names such as `FIELD_DEFINITION`).
    pub fn new(name: &str, locations: &[&str]) -> Directive {
        Directive {
            name: name.into(),
            description: None,
            locations: locations.iter().map(|l| l.to_string()).collect(),
            args: Vec::new(),
            repeatable: false,
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: &str) -> Directive {
        self.description = Some(text.into());
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: Arg) -> Directive {
        self.args.push(arg);
        self
    }

    /// Marks the directive repeatable.
    pub fn repeatable(mut self) -> Directive {
        self.repeatable = true;
        self
    }
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

// ---------------------------------------------------------------------------------------------
// Finished schema definitions.

/// What a scalar is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScalarKind {
    String,
    Int,
    Float,
    Boolean,
    Id,
    /// `<Type>ID` of a `with_id` object type.
    ObjectId(String),
    Custom,
}

pub(crate) struct ScalarDef {
    pub name: String,
    pub description: Option<String>,
    pub specified_by: Option<String>,
    pub kind: ScalarKind,
}

pub(crate) struct InputValueDef {
    pub name: String,
    pub description: Option<String>,
    pub ty: TypeRef,
    pub default: Option<ArgValue>,
    pub deprecation: Option<String>,
    pub sensitive: bool,
}

pub(crate) struct FieldDef {
    pub name: String,
    pub description: Option<String>,
    pub ty: TypeRef,
    pub args: IndexMap<String, InputValueDef>,
    pub deprecation: Option<String>,
    pub resolver: Resolver,
    /// `__schema` / `__type`: resolvable on Query but not listed.
    pub hidden: bool,
}

pub(crate) struct ObjectDef {
    pub name: String,
    pub description: Option<String>,
    pub fields: IndexMap<String, FieldDef>,
}

pub(crate) struct EnumValueDef {
    pub name: String,
    pub description: Option<String>,
    pub deprecation: Option<String>,
}

pub(crate) struct EnumDef {
    pub name: String,
    pub description: Option<String>,
    pub values: IndexMap<String, EnumValueDef>,
}

pub(crate) struct InputObjectDef {
    pub name: String,
    pub description: Option<String>,
    pub fields: IndexMap<String, InputValueDef>,
}

pub(crate) struct DirectiveDef {
    pub name: String,
    pub description: Option<String>,
    pub locations: Vec<String>,
    pub args: IndexMap<String, InputValueDef>,
    pub repeatable: bool,
}

pub(crate) enum TypeDef {
    Scalar(ScalarDef),
    Object(ObjectDef),
    Enum(EnumDef),
    InputObject(InputObjectDef),
}

impl TypeDef {
    pub fn name(&self) -> &str {
        match self {
            TypeDef::Scalar(t) => &t.name,
            TypeDef::Object(t) => &t.name,
            TypeDef::Enum(t) => &t.name,
            TypeDef::InputObject(t) => &t.name,
        }
    }

    pub fn description(&self) -> Option<&str> {
        match self {
            TypeDef::Scalar(t) => t.description.as_deref(),
            TypeDef::Object(t) => t.description.as_deref(),
            TypeDef::Enum(t) => t.description.as_deref(),
            TypeDef::InputObject(t) => t.description.as_deref(),
        }
    }

    pub fn is_input(&self) -> bool {
        !matches!(self, TypeDef::Object(_))
    }

    pub fn is_output(&self) -> bool {
        !matches!(self, TypeDef::InputObject(_))
    }
}

/// All type definitions by name (sorted by name).
pub(crate) type TypeMap = IndexMap<String, TypeDef>;

pub(crate) struct SchemaInner {
    pub types: TypeMap,
    pub directives: IndexMap<String, DirectiveDef>,
    pub limits: Limits,
    pub doc_cache: parking_lot::Mutex<HashMap<String, Arc<crate::validate::ValidDocument>>>,
}

/// A finished, immutable schema; cheap to clone. Execute requests with [`Schema::execute`].
#[derive(Clone)]
pub struct Schema {
    pub(crate) inner: Arc<SchemaInner>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("types", &self.inner.types.len())
            .finish_non_exhaustive()
    }
}

impl SchemaInner {
    pub fn object(&self, name: &str) -> Option<&ObjectDef> {
        match self.types.get(name) {
            Some(TypeDef::Object(o)) => Some(o),
            _ => None,
        }
    }

    pub fn query(&self) -> Option<&ObjectDef> {
        self.object("Query")
    }
}

/// Builds a [`Schema`].
#[derive(Default)]
pub struct SchemaBuilder {
    objects: Vec<Object>,
    enums: Vec<Enum>,
    inputs: Vec<InputObject>,
    scalars: Vec<Scalar>,
    directives: Vec<Directive>,
    limits: Limits,
}

impl SchemaBuilder {
    /// An empty builder; the schema needs at least a `Query` object type.
    pub fn new() -> SchemaBuilder {
        SchemaBuilder::default()
    }

    /// Adds an object type.
    pub fn object(mut self, object: Object) -> SchemaBuilder {
        self.objects.push(object);
        self
    }

    /// Adds an enum type.
    pub fn enumeration(mut self, enumeration: Enum) -> SchemaBuilder {
        self.enums.push(enumeration);
        self
    }

    /// Adds an input object type.
    pub fn input(mut self, input: InputObject) -> SchemaBuilder {
        self.inputs.push(input);
        self
    }

    /// Adds a custom scalar type.
    pub fn scalar(mut self, scalar: Scalar) -> SchemaBuilder {
        self.scalars.push(scalar);
        self
    }

    /// Declares an extra directive.
    pub fn directive(mut self, directive: Directive) -> SchemaBuilder {
        self.directives.push(directive);
        self
    }

    /// Sets the request limits.
    pub fn limits(mut self, limits: Limits) -> SchemaBuilder {
        self.limits = limits;
        self
    }

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
            let def = build_object(object, false, &mut pending)?;
            insert(&mut types, TypeDef::Object(def))?;
        }
        if !saw_query {
            return Err(SchemaError::NoQueryType);
        }
        for object in introspection::objects() {
            let def = build_object(object, true, &mut pending)?;
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

fn build_object(
    object: Object,
    internal: bool,
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
        let def = FieldDef {
            name: field.name,
            description: field.description,
            ty,
            args,
            deprecation: field.deprecation,
            resolver,
            hidden,
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

// ---------------------------------------------------------------------------------------------
// SDL.

impl Schema {
    /// Starts a [`SchemaBuilder`].
    pub fn build() -> SchemaBuilder {
        SchemaBuilder::new()
    }

    /// The schema as SDL (without built-in scalars, built-in directives and introspection types).
    pub fn sdl(&self) -> String {
        let mut blocks: Vec<String> = Vec::new();
        for d in self.inner.directives.values() {
            if matches!(
                d.name.as_str(),
                "include" | "skip" | "deprecated" | "specifiedBy"
            ) {
                continue;
            }
            let mut out = String::new();
            write_description(&mut out, d.description.as_deref(), "");
            out.push_str(&format!("directive @{}", d.name));
            write_args(&mut out, &d.args, "");
            if d.repeatable {
                out.push_str(" repeatable");
            }
            out.push_str(&format!(" on {}", d.locations.join(" | ")));
            blocks.push(out);
        }
        for def in self.inner.types.values() {
            if def.name().starts_with("__") {
                continue;
            }
            let mut out = String::new();
            write_description(&mut out, def.description(), "");
            match def {
                TypeDef::Scalar(s) => {
                    if s.kind != ScalarKind::Custom && !matches!(s.kind, ScalarKind::ObjectId(_)) {
                        continue;
                    }
                    out.push_str(&format!("scalar {}", s.name));
                    if let Some(url) = &s.specified_by {
                        out.push_str(" @specifiedBy(url: ");
                        write_string_literal(url, &mut out);
                        out.push(')');
                    }
                }
                TypeDef::Object(o) => {
                    out.push_str(&format!("type {} {{\n", o.name));
                    for f in o.fields.values().filter(|f| !f.hidden) {
                        write_description(&mut out, f.description.as_deref(), "  ");
                        out.push_str("  ");
                        out.push_str(&f.name);
                        write_args(&mut out, &f.args, "  ");
                        out.push_str(&format!(": {}", f.ty));
                        write_deprecated(&mut out, f.deprecation.as_deref());
                        out.push('\n');
                    }
                    out.push('}');
                }
                TypeDef::Enum(e) => {
                    out.push_str(&format!("enum {} {{\n", e.name));
                    for v in e.values.values() {
                        write_description(&mut out, v.description.as_deref(), "  ");
                        out.push_str("  ");
                        out.push_str(&v.name);
                        write_deprecated(&mut out, v.deprecation.as_deref());
                        out.push('\n');
                    }
                    out.push('}');
                }
                TypeDef::InputObject(i) => {
                    out.push_str(&format!("input {} {{\n", i.name));
                    for f in i.fields.values() {
                        write_description(&mut out, f.description.as_deref(), "  ");
                        out.push_str("  ");
                        write_input_value(&mut out, f);
                        out.push('\n');
                    }
                    out.push('}');
                }
            }
            blocks.push(out);
        }
        let mut sdl = blocks.join("\n\n");
        sdl.push('\n');
        sdl
    }
}

fn write_description(out: &mut String, description: Option<&str>, indent: &str) {
    let Some(text) = description else { return };
    out.push_str(indent);
    out.push_str("\"\"\"\n");
    for line in text.replace("\"\"\"", "\\\"\"\"").lines() {
        out.push_str(indent);
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(indent);
    out.push_str("\"\"\"\n");
}

fn write_deprecated(out: &mut String, reason: Option<&str>) {
    let Some(reason) = reason else { return };
    if reason == "No longer supported" {
        out.push_str(" @deprecated");
    } else {
        out.push_str(" @deprecated(reason: ");
        write_string_literal(reason, out);
        out.push(')');
    }
}

fn write_input_value(out: &mut String, v: &InputValueDef) {
    out.push_str(&format!("{}: {}", v.name, v.ty));
    if let Some(default) = &v.default {
        out.push_str(" = ");
        out.push_str(&default.to_literal());
    }
    write_deprecated(out, v.deprecation.as_deref());
}

fn write_args(out: &mut String, args: &IndexMap<String, InputValueDef>, indent: &str) {
    if args.is_empty() {
        return;
    }
    if args.values().all(|a| a.description.is_none()) {
        out.push('(');
        for (i, a) in args.values().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write_input_value(out, a);
        }
        out.push(')');
        return;
    }
    out.push_str("(\n");
    let inner = format!("{indent}  ");
    for a in args.values() {
        write_description(out, a.description.as_deref(), &inner);
        out.push_str(&inner);
        write_input_value(out, a);
        out.push('\n');
    }
    out.push_str(indent);
    out.push(')');
}
