//! dagr-gql: a GraphQL executor on graphql-parser, built for the Dagger-compatible core API.
//!
//! - [`Schema`] is built from Rust with [`SchemaBuilder`] ([`Object`], [`Field`], [`Arg`],
//!   [`Enum`], [`InputObject`], [`Scalar`], [`Directive`]) and printed with [`Schema::sdl`].
//! - [`Schema::execute`] takes a [`Request`] and [`RequestData`] and always answers a
//!   [`Response`]: parse, validate (spec rules, [`Limits`]), coerce inputs, run async resolvers
//!   (siblings concurrently), propagate nulls, and answer introspection (`__schema`, `__type`,
//!   `__typename`).
//! - Resolvers get a [`ResolveCtx`] (parent value, coerced [`ArgValue`]s, request data, call chain)
//!   and return a [`Value`] or a [`FieldError`] (message plus `extensions`).
//! - Every object carries its [`CallChain`]; types marked [`Object::with_id`] get an `id` field
//!   (an opaque, content-addressed ID string), a `load<Type>FromID` field, and `<Type>ID`
//!   arguments that resolvers receive as [`LoadedObject`]s (replayed through the resolvers).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod ast;
mod chain;
mod coerce;
mod exec;
mod http;
mod introspection;
mod schema;
mod types;
mod validate;
mod value;

pub use ast::{ParseError, Pos};
pub use chain::{Call, CallArg, CallChain, IdError};
pub use exec::{RequestData, ResolveCtx};
pub use http::{GqlError, Location, PathSegment, Request, Response};
pub use schema::{
    Arg, Directive, Enum, EnumValue, Field, InputObject, Limits, Object, ResolveFuture, Resolver,
    Scalar, Schema, SchemaBuilder, SchemaError,
};
pub use types::{TypeRef, TypeRefError};
pub use value::{ArgValue, FieldError, LoadedObject, ObjectValue, Value, ValueError};
