//! The compiled schema: [`Schema`] (cheap to clone, immutable) and the definitions the validator,
//! executor and introspection read. Its parts live in submodules: `builder` (the types a schema is
//! declared with: [`SchemaBuilder`], [`Object`], [`Field`], [`Arg`], ...), `compile` (checking a
//! builder and turning it into a [`Schema`], [`SchemaError`]) and `sdl` (printing [`Schema::sdl`]).

mod builder;
mod compile;
mod sdl;

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::types::TypeRef;
use crate::value::ArgValue;

pub use builder::{
    Arg, Directive, Enum, EnumValue, Field, InputObject, Object, ResolveFuture, Resolver, Scalar,
    SchemaBuilder, ScopeFn,
};
pub(crate) use compile::DIRECTIVE_LOCATIONS;
pub use compile::SchemaError;

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
    /// Its resolver is async: each call gets a span (see `Field::resolve`).
    pub does_work: bool,
    /// `__schema` / `__type`: resolvable on Query but not listed.
    pub hidden: bool,
    /// What its calls record from the request data (see `Field::scoped`).
    pub scope: Option<ScopeFn>,
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
