//! The types a schema is declared with: [`SchemaBuilder`] collects [`Object`]s (with [`Field`]s
//! and their [`Arg`]s), [`Enum`]s, [`InputObject`]s, [`Scalar`]s and [`Directive`]s; nothing is
//! checked until [`SchemaBuilder::finish`].

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value as Json;

use super::{Limits, Schema};
use crate::args::{Args, ArgsType};
use crate::exec::{RequestData, ResolveCtx};
use crate::value::{FieldError, Value};

/// The boxed future of a resolver.
pub type ResolveFuture = BoxFuture<'static, Result<Value, FieldError>>;

/// A field resolver: async, given the resolution context.
pub type Resolver = Arc<dyn Fn(ResolveCtx) -> ResolveFuture + Send + Sync>;

/// An argument of a field or directive, or a field of an input object.
#[derive(Clone)]
pub struct Arg {
    pub(super) name: String,
    pub(super) ty: String,
    pub(super) description: Option<String>,
    pub(super) default: Option<Json>,
    pub(super) deprecation: Option<String>,
    pub(super) sensitive: bool,
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
    pub(super) name: String,
    pub(super) ty: String,
    pub(super) description: Option<String>,
    pub(super) deprecation: Option<String>,
    pub(super) args: Vec<Arg>,
    /// The types given to [`Field::args`], checked against `args` by [`SchemaBuilder::finish`].
    pub(super) args_types: Vec<ArgsType>,
    pub(super) resolver: Option<Resolver>,
    pub(super) does_work: bool,
    pub(super) scope: Option<ScopeFn>,
}

/// What a scoped field records from the request data in its calls (see [`Field::scoped`]).
pub type ScopeFn = Arc<dyn Fn(&RequestData) -> Option<String> + Send + Sync>;

impl Field {
    /// A field `name` of output type `ty` written in GraphQL syntax (e.g. `"Container!"`).
    pub fn new(name: &str, ty: &str) -> Field {
        Field {
            name: name.into(),
            ty: ty.into(),
            description: None,
            deprecation: None,
            args: Vec::new(),
            args_types: Vec::new(),
            resolver: None,
            does_work: false,
            scope: None,
        }
    }

    /// Records `scope(request data)` in every call of this field, so that an ID holding the call
    /// remembers it: a replay of the ID (by any client) gives the resolver the recorded value in
    /// [`ResolveCtx::call`]`().scope`. `Host.directory` records which client's host it reads.
    pub fn scoped(
        mut self,
        scope: impl Fn(&RequestData) -> Option<String> + Send + Sync + 'static,
    ) -> Field {
        self.scope = Some(Arc::new(scope));
        self
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

    /// Adds the arguments `A` declares ([`Args::arguments`]), to be read with
    /// [`ResolveCtx::args_as`]. [`SchemaBuilder::finish`] checks that `A` is a plain struct whose
    /// fields each name one of the field's arguments, none of them an object ID.
    pub fn args<A: Args>(mut self) -> Field {
        self.args.extend(A::arguments());
        self.args_types.push(ArgsType::of::<A>());
        self
    }

    /// Sets the async resolver. An async resolver is a field that does work (solves, pulls,
    /// reads or writes a host): with telemetry on, each of its calls gets a span, under which
    /// the work it starts reports ([`ResolveCtx::span_cx`]).
    pub fn resolve<F, Fut>(mut self, resolver: F) -> Field
    where
        F: Fn(ResolveCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, FieldError>> + Send + 'static,
    {
        self.resolver = Some(Arc::new(move |ctx| Box::pin(resolver(ctx))));
        self.does_work = true;
        self
    }

    /// Sets a synchronous resolver: a field that does no work of its own (a getter, a lazy
    /// builder), so its calls get no span.
    pub fn resolve_sync<F>(mut self, resolver: F) -> Field
    where
        F: Fn(&ResolveCtx) -> Result<Value, FieldError> + Send + Sync + 'static,
    {
        self.resolver = Some(Arc::new(move |ctx| {
            Box::pin(futures::future::ready(resolver(&ctx)))
        }));
        self.does_work = false;
        self
    }
}

/// An object type.
#[derive(Clone)]
pub struct Object {
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) fields: Vec<Field>,
    pub(super) with_id: bool,
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
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) deprecation: Option<String>,
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
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) values: Vec<EnumValue>,
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
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) fields: Vec<Arg>,
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
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) specified_by: Option<String>,
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
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) locations: Vec<String>,
    pub(super) args: Vec<Arg>,
    pub(super) repeatable: bool,
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

/// Builds a [`Schema`].
#[derive(Default)]
pub struct SchemaBuilder {
    pub(super) objects: Vec<Object>,
    pub(super) enums: Vec<Enum>,
    pub(super) inputs: Vec<InputObject>,
    pub(super) scalars: Vec<Scalar>,
    pub(super) directives: Vec<Directive>,
    pub(super) limits: Limits,
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

    /// Adds fields to the object type `name` added before (a new object type when there is
    /// none): how an extension of a schema adds its entry points to `Query`.
    pub fn extend_object(
        mut self,
        name: &str,
        fields: impl IntoIterator<Item = Field>,
    ) -> SchemaBuilder {
        match self.objects.iter_mut().find(|o| o.name == name) {
            Some(object) => object.fields.extend(fields),
            None => {
                let mut object = Object::new(name);
                object.fields.extend(fields);
                self.objects.push(object);
            }
        }
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
}

impl Schema {
    /// Starts a [`SchemaBuilder`].
    pub fn build() -> SchemaBuilder {
        SchemaBuilder::new()
    }
}
