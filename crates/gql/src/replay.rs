//! IDs in and out: [`canonical_call`] records a resolved call into call chains (canonical
//! arguments), and a [`Replayer`] loads `<Type>ID` arguments by decoding their chain and re-running
//! its resolvers from the root. Each chain is replayed at most once per request: concurrent and
//! later loads of the same ID share one replay future.

use std::collections::HashMap;
use std::sync::Arc;

use dagr_telemetry::SpanCx;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::chain::{Call, CallArg, CallChain};
use crate::coerce;
use crate::exec::{RequestData, ResolveCtx, run_resolver};
use crate::schema::{FieldDef, InputValueDef, ScalarDef, ScalarKind, Schema, TypeDef};
use crate::types::TypeRef;
use crate::value::{ArgValue, FieldError, LoadedObject, ObjectValue, Value};

/// A replay of one chain, shared by every load of the same ID in a request.
type ReplayFuture = Shared<BoxFuture<'static, Result<ObjectValue, FieldError>>>;

/// Loads IDs for one request by replaying their chains; owns what it needs so replays can be
/// shared futures.
#[derive(Clone)]
pub(crate) struct Replayer {
    schema: Schema,
    data: Arc<RequestData>,
    root: ObjectValue,
    memo: Arc<parking_lot::Mutex<HashMap<String, ReplayFuture>>>,
}

impl Replayer {
    /// A replayer whose replays start at `root` (the request's `Query` value) and see `data`.
    pub(crate) fn new(schema: Schema, data: Arc<RequestData>, root: ObjectValue) -> Replayer {
        Replayer {
            schema,
            data,
            root,
            memo: Arc::default(),
        }
    }

    /// Replaces ID strings in `value` (of type `ty`) by the objects they load.
    pub(crate) fn load_ids<'a>(
        &'a self,
        value: ArgValue,
        ty: &'a TypeRef,
    ) -> BoxFuture<'a, Result<ArgValue, FieldError>> {
        Box::pin(async move {
            let named = match ty {
                TypeRef::NonNull(inner) => return self.load_ids(value, inner).await,
                TypeRef::List(item) => {
                    return match value {
                        ArgValue::List(items) => {
                            let mut out = Vec::with_capacity(items.len());
                            for v in items {
                                out.push(self.load_ids(v, item).await?);
                            }
                            Ok(ArgValue::List(out))
                        }
                        other => Ok(other),
                    };
                }
                TypeRef::Named(name) => name,
            };
            match (self.schema.inner.types.get(named), value) {
                (Some(TypeDef::Scalar(s)), ArgValue::String(id)) => match &s.kind {
                    ScalarKind::ObjectId(object_type) => {
                        let chain =
                            CallChain::decode(&id).map_err(|e| FieldError::new(e.to_string()))?;
                        self.load_chain(chain, object_type)
                            .await
                            .map(ArgValue::Loaded)
                    }
                    _ => Ok(ArgValue::String(id)),
                },
                (Some(TypeDef::InputObject(i)), ArgValue::Object(fields)) => {
                    let mut out = IndexMap::new();
                    for (k, v) in fields {
                        let v = match i.fields.get(&k) {
                            Some(f) => self.load_ids(v, &f.ty).await?,
                            None => v,
                        };
                        out.insert(k, v);
                    }
                    Ok(ArgValue::Object(out))
                }
                (_, other) => Ok(other),
            }
        })
    }

    /// Checks a decoded chain's type and replays it (once per request and chain).
    pub(crate) async fn load_chain(
        &self,
        chain: Arc<CallChain>,
        expected: &str,
    ) -> Result<LoadedObject, FieldError> {
        let got = chain.type_name().unwrap_or("Query");
        if got != expected {
            return Err(FieldError::new(format!(
                "expected {expected} ID, got {got} ID"
            )));
        }
        let key = chain.canonical();
        let replay_future = self
            .memo
            .lock()
            .entry(key)
            .or_insert_with(|| replay(self.clone(), Arc::clone(&chain)).shared())
            .clone();
        let object = replay_future.await?;
        Ok(LoadedObject { object, chain })
    }

    /// Rebuilds an argument from its canonical JSON (object arguments are nested call arrays).
    fn arg_from_canonical<'a>(
        &'a self,
        json: &'a Json,
        ty: &'a TypeRef,
    ) -> BoxFuture<'a, Result<ArgValue, FieldError>> {
        Box::pin(async move {
            let types = &self.schema.inner.types;
            match ty {
                TypeRef::NonNull(inner) => self.arg_from_canonical(json, inner).await,
                _ if json.is_null() => Ok(ArgValue::Null),
                TypeRef::List(item) => match json {
                    Json::Array(items) => {
                        let mut out = Vec::with_capacity(items.len());
                        for v in items {
                            out.push(self.arg_from_canonical(v, item).await?);
                        }
                        Ok(ArgValue::List(out))
                    }
                    _ => Err(FieldError::new(format!("expected a list for {ty}"))),
                },
                TypeRef::Named(name) => match types.get(name) {
                    Some(TypeDef::Scalar(ScalarDef {
                        kind: ScalarKind::ObjectId(object_type),
                        ..
                    })) => {
                        let chain = CallChain::from_json(json).map_err(FieldError::new)?;
                        self.load_chain(chain, object_type)
                            .await
                            .map(ArgValue::Loaded)
                    }
                    Some(TypeDef::InputObject(i)) => {
                        let Json::Object(given) = json else {
                            return Err(FieldError::new(format!("expected an object for {name}")));
                        };
                        let mut out = IndexMap::new();
                        for (fname, field) in &i.fields {
                            if let Some(v) = given.get(fname) {
                                out.insert(
                                    fname.clone(),
                                    self.arg_from_canonical(v, &field.ty).await?,
                                );
                            }
                        }
                        Ok(ArgValue::Object(out))
                    }
                    _ => coerce::coerce_json(types, json, ty).map_err(FieldError::new),
                },
            }
        })
    }
}

/// Re-runs the resolvers of a chain from the root.
fn replay(
    replayer: Replayer,
    chain: Arc<CallChain>,
) -> BoxFuture<'static, Result<ObjectValue, FieldError>> {
    Box::pin(async move {
        let inner = &replayer.schema.inner;
        let mut current = replayer.root.clone();
        let mut current_chain = CallChain::root();
        for call in chain.calls() {
            let invalid = |reason: String| FieldError::new(format!("invalid ID: {reason}"));
            let def = inner
                .object(&current.type_name)
                .and_then(|o| o.fields.get(&call.field))
                .ok_or_else(|| {
                    invalid(format!(
                        "type {} has no field {}",
                        current.type_name, call.field
                    ))
                })?;
            let mut args = IndexMap::new();
            for (name, arg) in &call.args {
                let arg_def = def
                    .args
                    .get(name)
                    .ok_or_else(|| invalid(format!("field {} has no argument {name}", def.name)))?;
                let value = match arg {
                    CallArg::Redacted(digest) => ArgValue::Redacted {
                        digest: digest.clone(),
                    },
                    CallArg::Value(json) => replayer
                        .arg_from_canonical(json, &arg_def.ty)
                        .await
                        .map_err(|e| {
                            invalid(format!("argument {name} of {}: {}", def.name, e.message))
                        })?,
                };
                args.insert(name.clone(), value);
            }
            for (name, arg_def) in &def.args {
                if args.contains_key(name) {
                    continue;
                }
                if let Some(default) = &arg_def.default {
                    args.insert(name.clone(), default.clone());
                } else if arg_def.ty.is_non_null() {
                    return Err(invalid(format!(
                        "argument {name} of {} is missing",
                        def.name
                    )));
                }
            }
            // Keep the resolver's view of the arguments in definition order.
            let args: IndexMap<String, ArgValue> = def
                .args
                .keys()
                .filter_map(|k| args.swap_remove(k).map(|v| (k.clone(), v)))
                .collect();
            let mut ctx_call = call.clone();
            ctx_call.nth = None;
            ctx_call.type_name = def.ty.base_name().to_string();
            let ctx = ResolveCtx::new(
                replayer.schema.clone(),
                current.clone(),
                Arc::clone(&current_chain),
                args,
                ctx_call,
                Arc::clone(&replayer.data),
                replayer.data.get::<SpanCx>().cloned().unwrap_or_default(),
            );
            let mut value = run_resolver(def, ctx).await?;
            if let Some(n) = call.nth {
                value = match value {
                    Value::List(items) => items
                        .into_iter()
                        .nth((n as usize).saturating_sub(1))
                        .ok_or_else(|| invalid(format!("{} has no item {n}", def.name)))?,
                    _ => return Err(invalid(format!("{} did not return a list", def.name))),
                };
            }
            let Value::Object(object) = value else {
                return Err(invalid(format!("{} did not return an object", def.name)));
            };
            if *object.type_name != *call.type_name {
                return Err(invalid(format!(
                    "{} returned {}, the ID says {}",
                    def.name, object.type_name, call.type_name
                )));
            }
            current_chain = match &object.chain {
                Some(c) => Arc::clone(c),
                None => current_chain.append(call.clone()),
            };
            current = ObjectValue {
                chain: None,
                ..object
            };
        }
        Ok(current)
    })
}

/// The canonical JSON of an argument (object arguments as nested call arrays), as
/// [`Replayer::arg_from_canonical`] reads it back.
fn to_canonical(value: &ArgValue) -> Json {
    match value {
        ArgValue::Loaded(obj) => obj.chain.to_json(),
        ArgValue::List(items) => Json::Array(items.iter().map(to_canonical).collect()),
        ArgValue::Object(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_canonical(v)))
                .collect(),
        ),
        ArgValue::Redacted { digest } => Json::String(digest.clone()),
        other => other.to_json().unwrap_or(Json::Null),
    }
}

/// The call as recorded in chains: arguments sorted, defaults omitted, sensitive ones digested.
pub(crate) fn canonical_call(def: &FieldDef, args: &IndexMap<String, ArgValue>) -> Call {
    let mut recorded: Vec<(String, CallArg)> = Vec::new();
    for (name, value) in args {
        let arg_def: Option<&InputValueDef> = def.args.get(name);
        if let Some(arg_def) = arg_def {
            if arg_def.default.as_ref() == Some(value) {
                continue;
            }
            if arg_def.sensitive {
                recorded.push((name.clone(), CallArg::Redacted(value.redaction_digest())));
                continue;
            }
        }
        recorded.push((name.clone(), CallArg::Value(to_canonical(value))));
    }
    recorded.sort_by(|a, b| a.0.cmp(&b.0));
    Call {
        field: def.name.clone(),
        args: recorded,
        type_name: def.ty.base_name().to_string(),
        nth: None,
        scope: None,
    }
}
