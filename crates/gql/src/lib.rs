//! dagr-gql: a GraphQL executor for the Dagger-compatible core API.
//!
//! - [`Schema`] is built from Rust with [`SchemaBuilder`] ([`Object`], [`Field`], [`Arg`],
//!   [`Enum`], [`InputObject`], [`Scalar`], [`Directive`]) and printed with [`Schema::sdl`].
//! - [`Schema::execute`] takes a [`Request`] and [`RequestData`] and always answers a
//!   [`Response`]: parse (own parser producing an AST shaped like graphql-parser's, since
//!   graphql-parser caps nesting at 50 brackets), validate (spec rules, [`Limits`]), coerce
//!   inputs, run async resolvers (siblings concurrently), propagate nulls, and answer
//!   introspection (`__schema`, `__type`, `__typename`). Valid documents are cached per schema.
//! - Resolvers get a [`ResolveCtx`] (parent value, coerced [`ArgValue`]s, request data, call chain)
//!   and return a [`Value`] or a [`FieldError`] (message plus `extensions`).
//! - Typed arguments: [`ResolveCtx::args_as`] deserializes a field's arguments into a serde
//!   struct ([`ArgsError`] names the field and argument on failure); a struct implementing
//!   [`Args`] also declares them ([`Field::args`]), so each argument is written once.
//! - Every object carries its [`CallChain`]; types marked [`Object::with_id`] get an `id` field
//!   (an opaque, content-addressed ID string), a `load<Type>FromID` field on `Query`, and
//!   `<Type>ID` arguments that resolvers receive as [`LoadedObject`]s (replayed through the
//!   resolvers). Arguments marked [`Arg::sensitive`] enter chains only as a digest.
//!
//! ```
//! use std::sync::Arc;
//! use dagr_gql::{Arg, Field, Object, Request, RequestData, Schema, Value};
//!
//! #[derive(Clone, Default)]
//! struct Container { args: Vec<String> }
//!
//! let schema = Schema::build()
//!     .object(Object::new("Query").field(
//!         Field::new("container", "Container!")
//!             .resolve_sync(|_| Ok(Value::object("Container", Arc::new(Container::default())))),
//!     ))
//!     .object(
//!         Object::new("Container")
//!             .with_id()
//!             .field(
//!                 Field::new("withExec", "Container!")
//!                     .arg(Arg::new("args", "[String!]!"))
//!                     .arg(Arg::new("stdin", "String").default(""))
//!                     .resolve(|ctx| async move {
//!                         let mut next = ctx.parent::<Container>()?.clone();
//!                         next.args.extend(ctx.arg::<Vec<String>>("args")?);
//!                         Ok(Value::object("Container", Arc::new(next)))
//!                     }),
//!             )
//!             .field(Field::new("args", "[String!]!").resolve_sync(|ctx| {
//!                 Ok(Value::leaf_list(ctx.parent::<Container>()?.args.clone()))
//!             })),
//!     )
//!     .finish()
//!     .unwrap();
//!
//! let query = r#"{ container { withExec(args: ["echo", "hi"]) { id args } } }"#;
//! let response = futures::executor::block_on(schema.execute(Request::new(query), RequestData::new()));
//! let data = response.data.unwrap();
//! let id = data["container"]["withExec"]["id"].as_str().unwrap().to_string();
//!
//! let load = Request::new("query($id: ContainerID!) { loadContainerFromID(id: $id) { args } }")
//!     .variables(serde_json::json!({ "id": id }));
//! let response = futures::executor::block_on(schema.execute(load, RequestData::new()));
//! assert_eq!(response.to_json(), serde_json::json!(
//!     {"data": {"loadContainerFromID": {"args": ["echo", "hi"]}}}
//! ));
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod args;
mod ast;
mod chain;
mod coerce;
mod exec;
mod http;
mod introspection;
mod replay;
mod schema;
mod types;
mod validate;
mod value;

pub use args::{Args, ArgsError};
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
