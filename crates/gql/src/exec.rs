//! Execution: [`Schema::execute`], the resolver context [`ResolveCtx`] and request-scoped data
//! [`RequestData`]. Sibling fields run concurrently (joined futures), results keep query order,
//! errors carry paths, and nulls propagate to the nearest nullable parent.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use crate::ast::{
    Field as AstField, OperationDefinition, Selection, SelectionSet, TypeCondition, Value as Ast,
};
use dagr_telemetry::{Span, SpanCx};
use futures::FutureExt as _;
use futures::future::{BoxFuture, join_all};
use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};

use crate::args::ArgsError;
use crate::chain::{Call, CallChain};
use crate::coerce::{self, Coerced};
use crate::http::{GqlError, PathSegment, Request, Response};
use crate::replay::{Replayer, canonical_call};
use crate::schema::{FieldDef, ScalarKind, Schema, SchemaInner, TypeDef};
use crate::types::TypeRef;
use crate::validate::ValidDocument;
use crate::value::{ArgValue, FieldError, LoadedObject, ObjectValue, Value};

type AstSelectionSet = SelectionSet;
type AstFieldRef<'d> = &'d AstField;

/// Typed values the caller attaches to one request (e.g. the client identity), read by resolvers
/// with [`ResolveCtx::data`]. The root value of `Query` is `()`.
#[derive(Default)]
pub struct RequestData {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl RequestData {
    /// No data.
    pub fn new() -> RequestData {
        RequestData::default()
    }

    /// Adds a value, replacing any earlier value of the same type.
    pub fn with<T: Any + Send + Sync>(mut self, value: T) -> RequestData {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
        self
    }

    /// A value by type.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }
}

/// Everything a resolver gets: parent object, coerced arguments, request data, call chain.
pub struct ResolveCtx {
    schema: Schema,
    parent: ObjectValue,
    parent_chain: Arc<CallChain>,
    args: IndexMap<String, ArgValue>,
    call: Call,
    data: Arc<RequestData>,
    span: SpanCx,
}

impl ResolveCtx {
    /// The context of one resolver call, made by the executor and by ID replay.
    pub(crate) fn new(
        schema: Schema,
        parent: ObjectValue,
        parent_chain: Arc<CallChain>,
        args: IndexMap<String, ArgValue>,
        call: Call,
        data: Arc<RequestData>,
        span: SpanCx,
    ) -> ResolveCtx {
        ResolveCtx {
            schema,
            parent,
            parent_chain,
            args,
            call,
            data,
            span,
        }
    }

    /// Runs another request on the schema of this one, with the same request data: a
    /// resolver built on other fields of the API (the IDs it answers load in this schema).
    pub async fn execute(&self, request: crate::Request) -> crate::Response {
        Box::pin(self.schema.execute_shared(request, Arc::clone(&self.data))).await
    }

    /// Loads the object an ID names (of any type of this request's schema), as an `<Type>ID`
    /// argument would be.
    pub async fn load(&self, id: &str) -> Result<LoadedObject, FieldError> {
        let chain = CallChain::decode(id).map_err(|e| FieldError::new(e.to_string()))?;
        let expected = chain.type_name().unwrap_or("Query").to_owned();
        let root = ObjectValue {
            type_name: Arc::from("Query"),
            data: Arc::new(()),
            chain: None,
        };
        let replayer = Replayer::new(self.schema.clone(), Arc::clone(&self.data), root);
        replayer.load_chain(chain, &expected).await
    }

    /// Where the work this call starts reports: under the call's own span for a field that
    /// does work, else under the request's [`SpanCx`] (from the request data; off without one).
    pub fn span_cx(&self) -> &SpanCx {
        &self.span
    }

    /// The parent object's Rust value.
    pub fn parent<T: Any + Send + Sync>(&self) -> Result<&T, FieldError> {
        self.parent.data.downcast_ref::<T>().ok_or_else(|| {
            FieldError::new(format!(
                "parent of {}.{} is not a {}",
                self.parent.type_name,
                self.call.field,
                std::any::type_name::<T>()
            ))
        })
    }

    /// The parent object's Rust value as a shared pointer.
    pub fn parent_arc<T: Any + Send + Sync>(&self) -> Result<Arc<T>, FieldError> {
        self.parent.downcast::<T>().ok_or_else(|| {
            FieldError::new(format!(
                "parent of {}.{} is not a {}",
                self.parent.type_name,
                self.call.field,
                std::any::type_name::<T>()
            ))
        })
    }

    /// The field being resolved.
    pub fn field_name(&self) -> &str {
        &self.call.field
    }

    /// An argument deserialized from its JSON form (enums as strings, objects as ID strings).
    /// An absent argument deserializes from `null`, so use `Option<T>` for optional ones.
    /// [`ResolveCtx::args_as`] reads all of a field's arguments into one struct.
    pub fn arg<T: DeserializeOwned>(&self, name: &str) -> Result<T, FieldError> {
        let json = match self.args.get(name) {
            None => Json::Null,
            Some(v) => v
                .to_json()
                .map_err(|e| FieldError::new(format!("argument {name}: {e}")))?,
        };
        serde_json::from_value(json).map_err(|e| FieldError::new(format!("argument {name}: {e}")))
    }

    /// The arguments deserialized into `T`: typically a struct with
    /// `#[serde(rename_all = "camelCase")]` that declares them ([`Args`](crate::Args), whose
    /// docs give the rules: `Option` for absent nullable arguments, object IDs and
    /// sensitive values read with [`ResolveCtx::loaded`] and [`ResolveCtx::redacted`] instead).
    /// Every struct field must name a declared argument.
    pub fn args_as<T: DeserializeOwned>(&self) -> Result<T, ArgsError> {
        let inner = &self.schema.inner;
        let declared = inner
            .object(&self.parent.type_name)
            .and_then(|o| o.fields.get(&self.call.field))
            .map(|f| &f.args);
        crate::args::deserialize_args(&inner.types, declared, &self.args, || {
            format!("{}.{}", self.parent.type_name, self.call.field)
        })
    }

    /// An argument's coerced value, if given (or defaulted).
    pub fn arg_value(&self, name: &str) -> Option<&ArgValue> {
        self.args.get(name)
    }

    /// All coerced arguments (defaults applied, absent nullable ones left out).
    pub fn args(&self) -> &IndexMap<String, ArgValue> {
        &self.args
    }

    /// The object loaded from an `<Type>ID` argument.
    pub fn loaded_object(&self, name: &str) -> Result<&LoadedObject, FieldError> {
        match self.args.get(name) {
            Some(ArgValue::Loaded(obj)) => Ok(obj),
            Some(_) => Err(FieldError::new(format!(
                "argument {name} is not an object ID"
            ))),
            None => Err(FieldError::new(format!("argument {name} was not given"))),
        }
    }

    /// The Rust value of the object loaded from an `<Type>ID` argument.
    pub fn loaded<T: Any + Send + Sync>(&self, name: &str) -> Result<Arc<T>, FieldError> {
        let obj = self.loaded_object(name)?;
        obj.downcast::<T>().ok_or_else(|| {
            FieldError::new(format!(
                "argument {name} ({}) is not a {}",
                obj.type_name(),
                std::any::type_name::<T>()
            ))
        })
    }

    /// The Rust values of the objects loaded from a `[<Type>ID!]` argument (empty if absent).
    pub fn loaded_list<T: Any + Send + Sync>(&self, name: &str) -> Result<Vec<Arc<T>>, FieldError> {
        match self.args.get(name) {
            None | Some(ArgValue::Null) => Ok(Vec::new()),
            Some(ArgValue::List(items)) => items
                .iter()
                .map(|item| match item {
                    ArgValue::Loaded(obj) => obj.downcast::<T>().ok_or_else(|| {
                        FieldError::new(format!(
                            "argument {name} ({}) is not a {}",
                            obj.type_name(),
                            std::any::type_name::<T>()
                        ))
                    }),
                    _ => Err(FieldError::new(format!(
                        "argument {name} holds a non-object value"
                    ))),
                })
                .collect(),
            Some(_) => Err(FieldError::new(format!(
                "argument {name} is not a list of object IDs"
            ))),
        }
    }

    /// For a sensitive argument replayed from an ID: the digest that stands for its value.
    pub fn redacted(&self, name: &str) -> Option<&str> {
        match self.args.get(name) {
            Some(ArgValue::Redacted { digest }) => Some(digest),
            _ => None,
        }
    }

    /// Request data by type.
    pub fn data<T: Any + Send + Sync>(&self) -> Result<&T, FieldError> {
        self.data.get::<T>().ok_or_else(|| {
            FieldError::new(format!("request has no {}", std::any::type_name::<T>()))
        })
    }

    /// The call chain that produced the parent object (empty for `Query`).
    pub fn parent_chain(&self) -> &Arc<CallChain> {
        &self.parent_chain
    }

    /// This call as it is recorded in chains (canonical arguments; `nth` unset).
    pub fn call(&self) -> &Call {
        &self.call
    }

    pub(crate) fn schema(&self) -> &SchemaInner {
        &self.schema.inner
    }

    /// `load<Type>FromID`: the loaded object keeps its own chain.
    pub(crate) fn loaded_arg_as_value(&self, name: &str) -> Result<Value, FieldError> {
        Ok(self.loaded_object(name)?.to_value())
    }
}

/// A persistent response path.
#[derive(Clone, Copy)]
struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    segment: Option<&'p PathSegmentRef<'p>>,
}

enum PathSegmentRef<'p> {
    Key(&'p str),
    Index(usize),
}

impl Path<'_> {
    fn segments(&self) -> Vec<PathSegment> {
        let mut out = Vec::new();
        let mut node = Some(self);
        while let Some(p) = node {
            match p.segment {
                Some(PathSegmentRef::Key(k)) => out.push(PathSegment::Key((*k).to_string())),
                Some(PathSegmentRef::Index(i)) => out.push(PathSegment::Index(*i)),
                None => {}
            }
            node = p.parent;
        }
        out.reverse();
        out
    }
}

struct ExecState<'d> {
    schema: Schema,
    doc: &'d ValidDocument,
    vars: IndexMap<String, ArgValue>,
    data: Arc<RequestData>,
    root: ObjectValue,
    errors: parking_lot::Mutex<Vec<GqlError>>,
    replayer: Replayer,
    /// The request's span context (the request data's [`SpanCx`], off without one).
    span: SpanCx,
}

/// An object being completed, with its chain.
struct ObjRef {
    object: ObjectValue,
    chain: Arc<CallChain>,
}

impl Schema {
    /// Executes a raw JSON request body (`{"query", "variables", "operationName"}`); a body that
    /// is not such JSON gets an error [`Response`] too.
    pub async fn execute_body(&self, body: &[u8], data: RequestData) -> Response {
        match serde_json::from_slice::<Request>(body) {
            Ok(request) => self.execute(request, data).await,
            Err(e) => {
                Response::from_errors(vec![GqlError::new(format!("invalid request body: {e}"))])
            }
        }
    }

    /// Parses, validates and executes a request. Every outcome is a [`Response`].
    pub async fn execute(&self, request: Request, data: RequestData) -> Response {
        self.execute_shared(request, Arc::new(data)).await
    }

    /// [`Schema::execute`] with request data shared with other requests (a resolver's own
    /// requests, see [`ResolveCtx::execute`]).
    pub(crate) async fn execute_shared(
        &self,
        request: Request,
        data: Arc<RequestData>,
    ) -> Response {
        let doc = match crate::validate::prepare(self, &request.query) {
            Ok(doc) => doc,
            Err(errors) => return Response::from_errors(errors),
        };
        let op = match doc.select_operation(request.operation_name.as_deref()) {
            Ok(op) => op,
            Err(e) => return Response::from_errors(vec![GqlError::new(e)]),
        };
        let (var_defs, selection_set) = match op {
            OperationDefinition::SelectionSet(s) => (&[][..], s),
            OperationDefinition::Query(q) => (&q.variable_definitions[..], &q.selection_set),
            OperationDefinition::Mutation(_) | OperationDefinition::Subscription(_) => {
                return Response::from_errors(vec![GqlError::new(
                    "only query operations are supported: the schema has no mutation or subscription type",
                )]);
            }
        };
        let types = &self.inner.types;
        let given = request.variables.unwrap_or_default();
        let mut vars = IndexMap::new();
        let mut var_errors = Vec::new();
        for def in var_defs {
            let ty = def.var_type.clone();
            match given.get(&def.name) {
                Some(json) => match coerce::coerce_json(types, json, &ty) {
                    Ok(v) => {
                        vars.insert(def.name.clone(), v);
                    }
                    Err(e) => var_errors.push(
                        GqlError::new(format!("variable ${} got invalid value: {e}", def.name))
                            .at(def.position),
                    ),
                },
                None => {
                    if let Some(default) = &def.default_value {
                        let empty = IndexMap::new();
                        match coerce::coerce_literal(types, default, &ty, Some(&empty)) {
                            Ok(Coerced::Value(v)) => {
                                vars.insert(def.name.clone(), v);
                            }
                            Ok(Coerced::Missing) => {}
                            Err(e) => var_errors.push(
                                GqlError::new(format!(
                                    "variable ${} has an invalid default: {e}",
                                    def.name
                                ))
                                .at(def.position),
                            ),
                        }
                    } else if ty.is_non_null() {
                        var_errors.push(
                            GqlError::new(format!(
                                "variable ${} of required type {ty} was not provided",
                                def.name
                            ))
                            .at(def.position),
                        );
                    }
                }
            }
        }
        if !var_errors.is_empty() {
            return Response::from_errors(var_errors);
        }
        let root_data: Arc<dyn Any + Send + Sync> = Arc::new(());
        let root_object = ObjectValue {
            type_name: Arc::from("Query"),
            data: root_data,
            chain: None,
        };
        let state = ExecState {
            schema: self.clone(),
            doc: &doc,
            vars,
            data: Arc::clone(&data),
            root: root_object.clone(),
            errors: parking_lot::Mutex::new(Vec::new()),
            replayer: Replayer::new(self.clone(), Arc::clone(&data), root_object.clone()),
            span: data.get::<SpanCx>().cloned().unwrap_or_default(),
        };
        let root = ObjRef {
            object: state.root.clone(),
            chain: CallChain::root(),
        };
        let root_path = Path {
            parent: None,
            segment: None,
        };
        let data = execute_selection_set(&state, &root, &[selection_set], root_path).await;
        let errors = std::mem::take(&mut *state.errors.lock());
        Response {
            data: Some(data.map(Json::Object).unwrap_or(Json::Null)),
            errors,
        }
    }
}

/// Whether `@skip`/`@include` keep a selection.
fn included(state: &ExecState<'_>, directives: &[crate::ast::Directive]) -> bool {
    for d in directives {
        let wanted = match d.name.as_str() {
            "skip" => true,
            "include" => false,
            _ => continue,
        };
        let value = d.arguments.iter().find(|(n, _)| n == "if").map(|(_, v)| v);
        let flag = match value {
            Some(Ast::Boolean(b)) => *b,
            Some(Ast::Variable(v)) => matches!(state.vars.get(v), Some(ArgValue::Boolean(true))),
            _ => false,
        };
        if flag == wanted {
            return false;
        }
    }
    true
}

/// CollectFields: response key -> field nodes, in query order.
fn collect_fields<'d>(
    state: &ExecState<'d>,
    type_name: &str,
    sets: &[&'d AstSelectionSet],
) -> IndexMap<&'d str, Vec<AstFieldRef<'d>>> {
    let mut out: IndexMap<&'d str, Vec<AstFieldRef<'d>>> = IndexMap::new();
    let mut visited = Vec::new();
    for set in sets {
        collect_into(state, type_name, set, &mut out, &mut visited);
    }
    out
}

fn collect_into<'d>(
    state: &ExecState<'d>,
    type_name: &str,
    set: &'d AstSelectionSet,
    out: &mut IndexMap<&'d str, Vec<AstFieldRef<'d>>>,
    visited: &mut Vec<&'d str>,
) {
    for item in &set.items {
        match item {
            Selection::Field(f) => {
                if included(state, &f.directives) {
                    let key = f.alias.as_deref().unwrap_or(&f.name);
                    out.entry(key).or_default().push(f);
                }
            }
            Selection::FragmentSpread(s) => {
                if !included(state, &s.directives) || visited.contains(&s.fragment_name.as_str()) {
                    continue;
                }
                visited.push(&s.fragment_name);
                if let Some(frag) = state.doc.fragment(&s.fragment_name) {
                    let TypeCondition::On(cond) = &frag.type_condition;
                    if cond == type_name {
                        collect_into(state, type_name, &frag.selection_set, out, visited);
                    }
                }
            }
            Selection::InlineFragment(i) => {
                if !included(state, &i.directives) {
                    continue;
                }
                let applies = match &i.type_condition {
                    None => true,
                    Some(TypeCondition::On(cond)) => cond == type_name,
                };
                if applies {
                    collect_into(state, type_name, &i.selection_set, out, visited);
                }
            }
        }
    }
}

fn execute_selection_set<'a, 'd: 'a>(
    state: &'a ExecState<'d>,
    obj: &'a ObjRef,
    sets: &'a [&'d AstSelectionSet],
    path: Path<'a>,
) -> BoxFuture<'a, Result<Map<String, Json>, ()>> {
    Box::pin(async move {
        let grouped = collect_fields(state, &obj.object.type_name, sets);
        let keys: Vec<PathSegmentRef<'d>> =
            grouped.keys().map(|k| PathSegmentRef::Key(k)).collect();
        let futures = grouped.values().zip(keys.iter()).map(|(fields, key)| {
            let field_path = Path {
                parent: Some(&path),
                segment: Some(key),
            };
            execute_field(state, obj, fields, field_path)
        });
        let results = join_all(futures).await;
        let mut map = Map::with_capacity(results.len());
        for (key, result) in grouped.keys().zip(results) {
            map.insert((*key).to_string(), result?);
        }
        Ok(map)
    })
}

fn field_error(state: &ExecState<'_>, err: FieldError, field: AstFieldRef<'_>, path: &Path<'_>) {
    let mut e = GqlError::new(err.message).at(field.position);
    e.path = path.segments();
    e.extensions = err.extensions;
    state.errors.lock().push(e);
}

async fn execute_field<'a, 'd: 'a>(
    state: &'a ExecState<'d>,
    obj: &'a ObjRef,
    fields: &'a [AstFieldRef<'d>],
    path: Path<'a>,
) -> Result<Json, ()> {
    // Resolution happens in its own future so its locals are off the stack while the
    // (recursive) completion runs.
    match resolve_field(state, obj, fields[0], &path).await {
        Resolved::Value { value, call, def } => {
            let completion = Completion {
                state,
                fields,
                def,
                call: &call,
                parent_chain: &obj.chain,
            };
            completion.complete(&def.ty, value, path, None).await
        }
        Resolved::Done(result) => result,
    }
}

enum Resolved<'a> {
    Value {
        value: Value,
        call: Call,
        def: &'a FieldDef,
    },
    Done(Result<Json, ()>),
}

async fn resolve_field<'a, 'd: 'a>(
    state: &'a ExecState<'d>,
    obj: &'a ObjRef,
    first: AstFieldRef<'d>,
    path: &Path<'_>,
) -> Resolved<'a> {
    if first.name == "__typename" {
        return Resolved::Done(Ok(Json::String(obj.object.type_name.to_string())));
    }
    let inner = &state.schema.inner;
    let Some(def) = inner
        .object(&obj.object.type_name)
        .and_then(|o| o.fields.get(&first.name))
    else {
        let message = format!("type {} has no field {}", obj.object.type_name, first.name);
        field_error(state, FieldError::new(message), first, path);
        return Resolved::Done(Err(()));
    };
    let fail = |err: FieldError| {
        field_error(state, err, first, path);
        Resolved::Done(if def.ty.is_non_null() {
            Err(())
        } else {
            Ok(Json::Null)
        })
    };
    let args = match coerce_field_args(state, def, &first.arguments).await {
        Ok(args) => args,
        Err(e) => return fail(e),
    };
    let mut call = canonical_call(def, &args);
    if let Some(scope) = &def.scope {
        call.scope = scope(&state.data);
    }
    let span = if def.does_work && state.span.is_on() {
        state
            .span
            .start(format!("{}.{}", obj.object.type_name, def.name))
    } else {
        Span::off()
    };
    let span_cx = if def.does_work {
        span.cx()
    } else {
        state.span.clone()
    };
    let ctx = ResolveCtx::new(
        state.schema.clone(),
        obj.object.clone(),
        Arc::clone(&obj.chain),
        args,
        call.clone(),
        Arc::clone(&state.data),
        span_cx,
    );
    let resolved = run_resolver(def, ctx).await;
    match &resolved {
        Ok(_) => span.end(),
        Err(e) => span.fail(&e.message),
    }
    match resolved {
        Ok(value) => Resolved::Value { value, call, def },
        Err(e) => fail(e),
    }
}

struct Completion<'a, 'd> {
    state: &'a ExecState<'d>,
    fields: &'a [AstFieldRef<'d>],
    def: &'a FieldDef,
    call: &'a Call,
    parent_chain: &'a Arc<CallChain>,
}

impl<'a, 'd: 'a> Completion<'a, 'd> {
    fn error(&self, message: String, path: &Path<'_>) {
        field_error(self.state, FieldError::new(message), self.fields[0], path);
    }

    fn complete<'s>(
        &'s self,
        ty: &'s TypeRef,
        value: Value,
        path: Path<'s>,
        nth: Option<u32>,
    ) -> BoxFuture<'s, Result<Json, ()>> {
        match ty {
            TypeRef::NonNull(inner) => {
                let inner_future = self.complete_nullable(inner, value, path, nth);
                Box::pin(async move {
                    let result = inner_future.await?;
                    if result.is_null() {
                        self.error(
                            format!(
                                "cannot return null for non-nullable field {}",
                                self.describe()
                            ),
                            &path,
                        );
                        return Err(());
                    }
                    Ok(result)
                })
            }
            other => Box::pin(
                self.complete_nullable(other, value, path, nth)
                    .map(|r| Ok(r.unwrap_or(Json::Null))),
            ),
        }
    }

    fn describe(&self) -> String {
        format!("{}.{}", self.parent_type_name(), self.def.name)
    }

    fn parent_type_name(&self) -> &str {
        self.parent_chain.type_name().unwrap_or("Query")
    }

    /// Completes a value of a nullable type; `Err` means a null must propagate upwards.
    fn complete_nullable<'s>(
        &'s self,
        ty: &'s TypeRef,
        value: Value,
        path: Path<'s>,
        nth: Option<u32>,
    ) -> BoxFuture<'s, Result<Json, ()>> {
        if matches!(value, Value::Null) {
            return Box::pin(futures::future::ready(Ok(Json::Null)));
        }
        match ty {
            TypeRef::NonNull(_) => self.complete(ty, value, path, nth),
            TypeRef::List(item_ty) => Box::pin(self.complete_list(ty, item_ty, value, path)),
            TypeRef::Named(name) => match self.complete_named(name, value, &path, nth) {
                Err(()) => Box::pin(futures::future::ready(Err(()))),
                Ok(Named::Leaf(json)) => Box::pin(futures::future::ready(Ok(json))),
                Ok(Named::Object(obj)) => Box::pin(async move {
                    let sets: Vec<&'d AstSelectionSet> =
                        self.fields.iter().map(|f| &f.selection_set).collect();
                    execute_selection_set(self.state, &obj, &sets, path)
                        .await
                        .map(Json::Object)
                }),
            },
        }
    }

    async fn complete_list<'s>(
        &'s self,
        ty: &'s TypeRef,
        item_ty: &'s TypeRef,
        value: Value,
        path: Path<'s>,
    ) -> Result<Json, ()> {
        let Value::List(items) = value else {
            self.error(
                format!(
                    "{} returned a non-list value for type {ty}",
                    self.describe()
                ),
                &path,
            );
            return Err(());
        };
        let segments: Vec<PathSegmentRef<'_>> =
            (0..items.len()).map(PathSegmentRef::Index).collect();
        let futures = items
            .into_iter()
            .zip(segments.iter())
            .enumerate()
            .map(|(i, (item, seg))| {
                let item_path = Path {
                    parent: Some(&path),
                    segment: Some(seg),
                };
                self.complete(item_ty, item, item_path, u32::try_from(i + 1).ok())
            });
        let results = join_all(futures).await;
        Ok(Json::Array(results.into_iter().collect::<Result<_, _>>()?))
    }

    /// A leaf serialized, or an object ready for its sub-selection (with its chain).
    fn complete_named(
        &self,
        name: &str,
        value: Value,
        path: &Path<'_>,
        nth: Option<u32>,
    ) -> Result<Named, ()> {
        let Some(def) = self.state.schema.inner.types.get(name) else {
            self.error(format!("unknown type {name}"), path);
            return Err(());
        };
        if !matches!(def, TypeDef::Object(_)) {
            return serialize_leaf(def, value)
                .map(Named::Leaf)
                .map_err(|reason| {
                    self.error(format!("{}: {reason}", self.describe()), path);
                });
        }
        let Value::Object(object) = value else {
            self.error(
                format!(
                    "{} returned a non-object value for type {name}",
                    self.describe()
                ),
                path,
            );
            return Err(());
        };
        if &*object.type_name != name {
            let message = format!(
                "{} returned an object of type {}, expected {name}",
                self.describe(),
                object.type_name
            );
            self.error(message, path);
            return Err(());
        }
        let chain = match &object.chain {
            Some(chain) if chain.type_name() != Some(name) => {
                let message = format!(
                    "{} returned a {name} whose call chain ends in {}",
                    self.describe(),
                    chain.type_name().unwrap_or("Query")
                );
                self.error(message, path);
                return Err(());
            }
            Some(chain) => Arc::clone(chain),
            None => {
                let mut call = self.call.clone();
                call.type_name = name.to_string();
                call.nth = nth;
                self.parent_chain.append(call)
            }
        };
        Ok(Named::Object(ObjRef { object, chain }))
    }
}

enum Named {
    Leaf(Json),
    Object(ObjRef),
}

/// Runs a resolver; a panic becomes a field error instead of taking the request down.
pub(crate) async fn run_resolver(def: &FieldDef, ctx: ResolveCtx) -> Result<Value, FieldError> {
    let panicked = |payload: Box<dyn Any + Send>| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        FieldError::new(format!("resolver of {} panicked: {detail}", def.name))
    };
    let resolver = &def.resolver;
    let future = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| resolver(ctx))) {
        Ok(future) => future,
        Err(payload) => return Err(panicked(payload)),
    };
    match std::panic::AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(panicked(payload)),
    }
}

/// Output coercion of a scalar or enum value.
fn serialize_leaf(def: &TypeDef, value: Value) -> Result<Json, String> {
    let json = match value {
        Value::Leaf(json) => json,
        Value::Null => return Ok(Json::Null),
        Value::List(_) => return Err(format!("returned a list for type {}", def.name())),
        Value::Object(o) => {
            return Err(format!(
                "returned an object {} for type {}",
                o.type_name,
                def.name()
            ));
        }
    };
    let bad = |json: &Json| format!("cannot represent {json} as {}", def.name());
    match def {
        TypeDef::Scalar(s) => match s.kind {
            ScalarKind::String | ScalarKind::ObjectId(_) => match json {
                Json::String(_) => Ok(json),
                other => Err(bad(&other)),
            },
            ScalarKind::Boolean => match json {
                Json::Bool(_) => Ok(json),
                other => Err(bad(&other)),
            },
            ScalarKind::Int => match &json {
                Json::Number(n) if n.is_i64() || n.is_u64() => Ok(json),
                Json::Number(n) => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Json::from(f as i64)),
                    _ => Err(bad(&json)),
                },
                _ => Err(bad(&json)),
            },
            ScalarKind::Float => match &json {
                Json::Number(n) => n
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Json::Number)
                    .ok_or_else(|| bad(&json)),
                _ => Err(bad(&json)),
            },
            ScalarKind::Id => match &json {
                Json::String(_) => Ok(json),
                Json::Number(n) if n.is_i64() || n.is_u64() => Ok(Json::String(n.to_string())),
                _ => Err(bad(&json)),
            },
            ScalarKind::Custom => Ok(json),
        },
        TypeDef::Enum(e) => match &json {
            Json::String(v) if e.values.contains_key(v) => Ok(json),
            _ => Err(bad(&json)),
        },
        _ => Err(bad(&json)),
    }
}

/// Coerces a field's arguments (variables substituted, defaults applied, IDs loaded).
async fn coerce_field_args(
    state: &ExecState<'_>,
    def: &FieldDef,
    given: &[(String, Ast)],
) -> Result<IndexMap<String, ArgValue>, FieldError> {
    let types = &state.schema.inner.types;
    let mut out = IndexMap::new();
    for (name, arg) in &def.args {
        let provided = match given.iter().find(|(n, _)| n == name) {
            Some((_, literal)) => {
                coerce::coerce_literal(types, literal, &arg.ty, Some(&state.vars))
                    .map_err(|e| FieldError::new(format!("argument {name} of {}: {e}", def.name)))?
            }
            None => Coerced::Missing,
        };
        let value = match provided {
            Coerced::Value(ArgValue::Null) if arg.default.is_none() && !arg.ty.is_non_null() => {
                continue;
            }
            Coerced::Value(v) => v,
            Coerced::Missing => match &arg.default {
                Some(default) => default.clone(),
                None if arg.ty.is_non_null() => {
                    return Err(FieldError::new(format!(
                        "argument {name} of {} of required type {} was not provided",
                        def.name, arg.ty
                    )));
                }
                None => continue,
            },
        };
        let value = state.replayer.load_ids(value, &arg.ty).await?;
        out.insert(name.clone(), value);
    }
    Ok(out)
}
