//! Parsing and validation of query documents (the GraphQL spec rules that matter for a
//! query-only schema without interfaces or unions), plus the request limits and a cache of
//! validated documents.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::ast::Pos;
use crate::ast::{
    Definition, Directive as AstDirective, Document, FragmentDefinition, OperationDefinition,
    Selection, SelectionSet, TypeCondition, Value as Ast,
};

use crate::coerce;
use crate::http::GqlError;
use crate::schema::{
    DirectiveDef, InputValueDef, ObjectDef, ScalarDef, ScalarKind, Schema, SchemaInner, TypeDef,
};
use crate::types::TypeRef;

type Set = SelectionSet;
type Frag = FragmentDefinition;
type Op = OperationDefinition;

/// A parsed document that passed validation.
pub(crate) struct ValidDocument {
    doc: Document,
    fragments: HashMap<String, usize>,
}

impl ValidDocument {
    pub fn fragment(&self, name: &str) -> Option<&Frag> {
        match self.doc.definitions.get(*self.fragments.get(name)?) {
            Some(Definition::Fragment(f)) => Some(f),
            _ => None,
        }
    }

    fn operations(&self) -> impl Iterator<Item = &Op> {
        self.doc.definitions.iter().filter_map(|d| match d {
            Definition::Operation(op) => Some(op),
            Definition::Fragment(_) => None,
        })
    }

    /// GetOperation: by name, or the only one.
    pub fn select_operation(&self, name: Option<&str>) -> Result<&Op, String> {
        match name.filter(|n| !n.is_empty()) {
            Some(name) => self
                .operations()
                .find(|op| op_name(op) == Some(name))
                .ok_or_else(|| format!("unknown operation named {name:?}")),
            None => {
                let mut ops = self.operations();
                match (ops.next(), ops.next()) {
                    (Some(op), None) => Ok(op),
                    (Some(_), Some(_)) => Err(String::from(
                        "must provide operation name if query contains multiple operations",
                    )),
                    (None, _) => Err(String::from("document contains no operation")),
                }
            }
        }
    }
}

fn op_name(op: &Op) -> Option<&str> {
    match op {
        OperationDefinition::SelectionSet(_) => None,
        OperationDefinition::Query(q) => q.name.as_deref(),
        OperationDefinition::Mutation(m) => m.name.as_deref(),
        OperationDefinition::Subscription(s) => s.name.as_deref(),
    }
}

fn op_position(op: &Op) -> Pos {
    match op {
        OperationDefinition::SelectionSet(s) => s.span.0,
        OperationDefinition::Query(q) => q.position,
        OperationDefinition::Mutation(m) => m.position,
        OperationDefinition::Subscription(s) => s.position,
    }
}

/// Parses and validates `query` (or takes it from the schema's cache).
pub(crate) fn prepare(schema: &Schema, query: &str) -> Result<Arc<ValidDocument>, Vec<GqlError>> {
    let inner = &schema.inner;
    let limits = &inner.limits;
    if let Some(doc) = inner.doc_cache.lock().get(query) {
        return Ok(Arc::clone(doc));
    }
    if query.len() > limits.max_document_bytes {
        return Err(vec![GqlError::new(format!(
            "query document is {} bytes, more than the limit of {} bytes",
            query.len(),
            limits.max_document_bytes
        ))]);
    }
    let doc = match crate::ast::parse_document(query, limits.max_depth) {
        Ok(doc) => doc,
        Err(e) => return Err(vec![GqlError::new(e.to_string()).at(e.pos())]),
    };
    let mut fragments = HashMap::new();
    for (i, def) in doc.definitions.iter().enumerate() {
        if let Definition::Fragment(f) = def {
            fragments.entry(f.name.clone()).or_insert(i);
        }
    }
    let valid = ValidDocument { doc, fragments };
    let errors = Validator::new(inner, &valid).run();
    if !errors.is_empty() {
        return Err(errors);
    }
    let valid = Arc::new(valid);
    if limits.max_cached_documents > 0 && query.len() <= limits.max_cached_document_bytes {
        let mut cache = inner.doc_cache.lock();
        if cache.len() >= limits.max_cached_documents {
            cache.clear();
        }
        cache.insert(query.to_string(), Arc::clone(&valid));
    }
    Ok(valid)
}

/// A variable used somewhere, with the type expected there.
struct VarUsage {
    name: String,
    /// `None` inside a custom scalar's literal, where any variable type fits.
    expected: Option<TypeRef>,
    location_has_default: bool,
    pos: Pos,
}

#[derive(Default)]
struct Usages {
    vars: Vec<VarUsage>,
    spreads: Vec<String>,
}

struct Validator<'a> {
    schema: &'a SchemaInner,
    doc: &'a ValidDocument,
    errors: Vec<GqlError>,
    aliases: usize,
}

impl<'a> Validator<'a> {
    fn new(schema: &'a SchemaInner, doc: &'a ValidDocument) -> Validator<'a> {
        Validator {
            schema,
            doc,
            errors: Vec::new(),
            aliases: 0,
        }
    }

    fn error(&mut self, message: String, pos: Pos) {
        self.errors.push(GqlError::new(message).at(pos));
    }

    fn run(mut self) -> Vec<GqlError> {
        let defs = &self.doc.doc.definitions;
        // Operations: names, anonymity, type.
        let ops: Vec<&Op> = self.doc.operations().collect();
        if ops.is_empty() {
            self.errors
                .push(GqlError::new("document contains no operation"));
        }
        let mut names = HashSet::new();
        for op in &ops {
            if let Some(name) = op_name(op)
                && !names.insert(name)
            {
                self.error(
                    format!("there can be only one operation named {name:?}"),
                    op_position(op),
                );
            }
            if op_name(op).is_none() && ops.len() > 1 {
                self.error(
                    "this anonymous operation must be the only defined operation".into(),
                    op_position(op),
                );
            }
            match op {
                OperationDefinition::Mutation(m) => self.error(
                    "schema is not configured to execute mutation operations".into(),
                    m.position,
                ),
                OperationDefinition::Subscription(s) => self.error(
                    "schema is not configured to execute subscription operations".into(),
                    s.position,
                ),
                _ => {}
            }
        }
        // Fragments: unique names, type conditions, their own selections.
        let mut fragment_usages: HashMap<&str, Usages> = HashMap::new();
        let mut seen = HashSet::new();
        for def in defs {
            let Definition::Fragment(f) = def else {
                continue;
            };
            if !seen.insert(f.name.as_str()) {
                self.error(
                    format!("there can be only one fragment named {:?}", f.name),
                    f.position,
                );
                continue;
            }
            let TypeCondition::On(cond) = &f.type_condition;
            let mut usages = Usages::default();
            self.check_directives(&f.directives, "FRAGMENT_DEFINITION", &mut usages);
            match self.schema.types.get(cond) {
                None => self.error(
                    format!("unknown type {cond:?} in fragment {:?}", f.name),
                    f.position,
                ),
                Some(TypeDef::Object(obj)) => {
                    self.check_selection_set(obj, &f.selection_set, &mut usages)
                }
                Some(_) => self.error(
                    format!(
                        "fragment {:?} cannot condition on non composite type {cond:?}",
                        f.name
                    ),
                    f.position,
                ),
            }
            fragment_usages.insert(&f.name, usages);
        }
        self.check_fragment_cycles(&fragment_usages);
        // Operations: selections and variables.
        let mut used_fragments: HashSet<&str> = HashSet::new();
        for op in &ops {
            let (var_defs, directives, set, location) = match op {
                OperationDefinition::SelectionSet(s) => (&[][..], &[][..], s, "QUERY"),
                OperationDefinition::Query(q) => (
                    &q.variable_definitions[..],
                    &q.directives[..],
                    &q.selection_set,
                    "QUERY",
                ),
                OperationDefinition::Mutation(m) => (
                    &m.variable_definitions[..],
                    &m.directives[..],
                    &m.selection_set,
                    "MUTATION",
                ),
                OperationDefinition::Subscription(s) => (
                    &s.variable_definitions[..],
                    &s.directives[..],
                    &s.selection_set,
                    "SUBSCRIPTION",
                ),
            };
            if location != "QUERY" {
                continue;
            }
            let mut usages = Usages::default();
            self.check_directives(directives, location, &mut usages);
            let Some(query) = self.schema.query() else {
                self.errors.push(GqlError::new("schema has no Query type"));
                break;
            };
            self.check_selection_set(query, set, &mut usages);
            // Transitive fragments.
            let mut stack: Vec<String> = usages.spreads.clone();
            let mut reached: HashSet<String> = HashSet::new();
            let mut all_vars: Vec<&VarUsage> = usages.vars.iter().collect();
            while let Some(name) = stack.pop() {
                if !reached.insert(name.clone()) {
                    continue;
                }
                if let Some(fu) = fragment_usages.get(name.as_str()) {
                    all_vars.extend(fu.vars.iter());
                    stack.extend(fu.spreads.iter().cloned());
                }
            }
            for name in &reached {
                if let Some((k, _)) = fragment_usages.get_key_value(name.as_str()) {
                    used_fragments.insert(k);
                }
            }
            self.check_variables(op, var_defs, &all_vars);
            if self.errors.is_empty() {
                self.check_shape(query, set);
            }
        }
        for def in defs {
            if let Definition::Fragment(f) = def
                && !used_fragments.contains(f.name.as_str())
            {
                self.error(format!("fragment {:?} is never used", f.name), f.position);
            }
        }
        if self.aliases > self.schema.limits.max_aliases {
            self.errors.push(GqlError::new(format!(
                "query uses {} aliases, more than the limit of {}",
                self.aliases, self.schema.limits.max_aliases
            )));
        }
        self.errors
    }

    fn check_fragment_cycles(&mut self, usages: &HashMap<&str, Usages>) {
        // Depth-first search with colours.
        let mut state: HashMap<&str, u8> = HashMap::new();
        let mut names: Vec<&str> = usages.keys().copied().collect();
        names.sort_unstable();
        for start in names {
            if state.contains_key(start) {
                continue;
            }
            let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
            state.insert(start, 1);
            while let Some((name, idx)) = stack.pop() {
                let spreads = usages.get(name).map(|u| &u.spreads[..]).unwrap_or(&[]);
                if idx < spreads.len() {
                    stack.push((name, idx + 1));
                    let next = spreads[idx].as_str();
                    match state.get(next) {
                        Some(1) => {
                            let pos = self
                                .doc
                                .fragment(next)
                                .map(|f| f.position)
                                .unwrap_or_default();
                            self.error(
                                format!("cannot spread fragment {next:?} within itself"),
                                pos,
                            );
                        }
                        Some(_) => {}
                        None if usages.contains_key(next) => {
                            state.insert(next, 1);
                            stack.push((next, 0));
                        }
                        None => {}
                    }
                } else {
                    state.insert(name, 2);
                }
            }
        }
    }

    fn check_selection_set(&mut self, parent: &ObjectDef, set: &Set, usages: &mut Usages) {
        for item in &set.items {
            match item {
                Selection::Field(f) => {
                    if f.alias.is_some() {
                        self.aliases += 1;
                    }
                    self.check_directives(&f.directives, "FIELD", usages);
                    if f.name == "__typename" {
                        for (name, _) in &f.arguments {
                            self.error(
                                format!("unknown argument {name:?} on field \"__typename\""),
                                f.position,
                            );
                        }
                        if !f.selection_set.items.is_empty() {
                            self.error(
                                "field \"__typename\" must not have a selection since type \"String!\" has no subfields"
                                    .into(),
                                f.position,
                            );
                        }
                        continue;
                    }
                    let Some(def) = parent.fields.get(&f.name) else {
                        self.error(
                            format!("cannot query field {:?} on type {:?}", f.name, parent.name),
                            f.position,
                        );
                        continue;
                    };
                    let owner = format!("{}.{}", parent.name, f.name);
                    self.check_arguments(&owner, &def.args, &f.arguments, f.position, usages);
                    let base = def.ty.base_name();
                    match self.schema.types.get(base) {
                        Some(TypeDef::Object(obj)) => {
                            if f.selection_set.items.is_empty() {
                                self.error(
                                    format!("field {:?} of type {:?} must have a selection of subfields", f.name, def.ty.to_string()),
                                    f.position,
                                );
                            } else {
                                self.check_selection_set(obj, &f.selection_set, usages);
                            }
                        }
                        _ => {
                            if !f.selection_set.items.is_empty() {
                                self.error(
                                    format!(
                                        "field {:?} must not have a selection since type {:?} has no subfields",
                                        f.name,
                                        def.ty.to_string()
                                    ),
                                    f.position,
                                );
                            }
                        }
                    }
                }
                Selection::FragmentSpread(s) => {
                    self.check_directives(&s.directives, "FRAGMENT_SPREAD", usages);
                    match self.doc.fragment(&s.fragment_name) {
                        None => self.error(
                            format!("unknown fragment {:?}", s.fragment_name),
                            s.position,
                        ),
                        Some(frag) => {
                            let TypeCondition::On(cond) = &frag.type_condition;
                            if matches!(self.schema.types.get(cond), Some(TypeDef::Object(_)))
                                && cond != &parent.name
                            {
                                self.error(
                                    format!(
                                        "fragment {:?} cannot be spread here as objects of type {:?} can never be of type {cond:?}",
                                        s.fragment_name, parent.name
                                    ),
                                    s.position,
                                );
                            }
                            usages.spreads.push(s.fragment_name.clone());
                        }
                    }
                }
                Selection::InlineFragment(i) => {
                    self.check_directives(&i.directives, "INLINE_FRAGMENT", usages);
                    if let Some(TypeCondition::On(cond)) = &i.type_condition {
                        match self.schema.types.get(cond) {
                            None => {
                                self.error(format!("unknown type {cond:?}"), i.position);
                                continue;
                            }
                            Some(TypeDef::Object(_)) => {
                                if cond != &parent.name {
                                    self.error(
                                        format!(
                                            "fragment cannot be spread here as objects of type {:?} can never be of type {cond:?}",
                                            parent.name
                                        ),
                                        i.position,
                                    );
                                    continue;
                                }
                            }
                            Some(_) => {
                                self.error(
                                    format!(
                                        "fragment cannot condition on non composite type {cond:?}"
                                    ),
                                    i.position,
                                );
                                continue;
                            }
                        }
                    }
                    self.check_selection_set(parent, &i.selection_set, usages);
                }
            }
        }
    }

    fn check_arguments(
        &mut self,
        owner: &str,
        defs: &indexmap::IndexMap<String, InputValueDef>,
        given: &[(String, Ast)],
        pos: Pos,
        usages: &mut Usages,
    ) {
        let mut seen = HashSet::new();
        for (name, value) in given {
            if !seen.insert(name.as_str()) {
                self.error(
                    format!("there can be only one argument named {name:?}"),
                    pos,
                );
                continue;
            }
            let Some(def) = defs.get(name) else {
                self.error(format!("unknown argument {name:?} on {owner}"), pos);
                continue;
            };
            if let Err(reason) = coerce::coerce_literal(&self.schema.types, value, &def.ty, None) {
                self.error(
                    format!("argument {name:?} on {owner} has an invalid value: {reason}"),
                    pos,
                );
            }
            collect_vars(
                &self.schema.types,
                value,
                &def.ty,
                def.default.is_some(),
                pos,
                &mut usages.vars,
            );
        }
        for (name, def) in defs {
            if def.ty.is_non_null() && def.default.is_none() && !seen.contains(name.as_str()) {
                self.error(
                    format!("argument {name:?} of type {:?} on {owner} is required, but it was not provided", def.ty.to_string()),
                    pos,
                );
            }
        }
    }

    fn check_directives(
        &mut self,
        directives: &[AstDirective],
        location: &str,
        usages: &mut Usages,
    ) {
        let mut seen = HashSet::new();
        for d in directives {
            let Some(def): Option<&DirectiveDef> = self.schema.directives.get(&d.name) else {
                self.error(format!("unknown directive \"@{}\"", d.name), d.position);
                continue;
            };
            if !def.locations.iter().any(|l| l == location) {
                self.error(
                    format!("directive \"@{}\" may not be used on {location}", d.name),
                    d.position,
                );
                continue;
            }
            if !def.repeatable && !seen.insert(d.name.as_str()) {
                self.error(
                    format!(
                        "the directive \"@{}\" can only be used once at this location",
                        d.name
                    ),
                    d.position,
                );
            }
            let owner = format!("@{}", d.name);
            self.check_arguments(&owner, &def.args, &d.arguments, d.position, usages);
        }
    }

    fn check_variables(
        &mut self,
        op: &Op,
        defs: &[crate::ast::VariableDefinition],
        used: &[&VarUsage],
    ) {
        let op_label = op_name(op)
            .map(|n| format!(" in operation {n:?}"))
            .unwrap_or_default();
        let mut declared: HashMap<&str, (TypeRef, bool)> = HashMap::new();
        for def in defs {
            let ty = def.var_type.clone();
            if declared.contains_key(def.name.as_str()) {
                self.error(
                    format!("there can be only one variable named \"${}\"", def.name),
                    def.position,
                );
                continue;
            }
            let mut ignored = Usages::default();
            self.check_directives(&def.directives, "VARIABLE_DEFINITION", &mut ignored);
            match self.schema.types.get(ty.base_name()) {
                Some(t) if t.is_input() => {}
                None => {
                    self.error(
                        format!(
                            "unknown type {:?} for variable \"${}\"",
                            ty.base_name(),
                            def.name
                        ),
                        def.position,
                    );
                    continue;
                }
                Some(_) => {
                    self.error(
                        format!(
                            "variable \"${}\" cannot be non-input type {:?}",
                            def.name,
                            ty.to_string()
                        ),
                        def.position,
                    );
                    continue;
                }
            }
            let mut has_default = false;
            if let Some(default) = &def.default_value {
                let empty = indexmap::IndexMap::new();
                match coerce::coerce_literal(&self.schema.types, default, &ty, Some(&empty)) {
                    Ok(coerce::Coerced::Value(v)) => {
                        has_default = !matches!(v, crate::value::ArgValue::Null)
                    }
                    Ok(coerce::Coerced::Missing) => self.error(
                        format!(
                            "default value of variable \"${}\" uses a variable",
                            def.name
                        ),
                        def.position,
                    ),
                    Err(reason) => self.error(
                        format!(
                            "variable \"${}\" has an invalid default value: {reason}",
                            def.name
                        ),
                        def.position,
                    ),
                }
            }
            declared.insert(&def.name, (ty, has_default));
        }
        let mut used_names = HashSet::new();
        for usage in used {
            used_names.insert(usage.name.as_str());
            match declared.get(usage.name.as_str()) {
                None => self.error(
                    format!("variable \"${}\" is not defined{op_label}", usage.name),
                    usage.pos,
                ),
                Some((var_ty, var_default)) => {
                    let Some(expected) = &usage.expected else {
                        continue;
                    };
                    let ok = if expected.is_non_null() && !var_ty.is_non_null() {
                        (*var_default || usage.location_has_default)
                            && types_compatible(var_ty, expected.nullable())
                    } else {
                        types_compatible(var_ty, expected)
                    };
                    if !ok {
                        self.error(
                            format!(
                                "variable \"${}\" of type {:?} used in position expecting type {:?}",
                                usage.name,
                                var_ty.to_string(),
                                expected.to_string()
                            ),
                            usage.pos,
                        );
                    }
                }
            }
        }
        for def in defs {
            if !used_names.contains(def.name.as_str()) {
                self.error(
                    format!("variable \"${}\" is never used{op_label}", def.name),
                    def.position,
                );
            }
        }
    }

    /// Field merging, depth and expanded field count over the whole operation.
    fn check_shape(&mut self, query: &ObjectDef, set: &Set) {
        let mut shape = Shape {
            validator: self,
            fields: 0,
            stop: false,
        };
        shape.walk(query, &[set], 1);
    }
}

fn types_compatible(var: &TypeRef, expected: &TypeRef) -> bool {
    match (var, expected) {
        (TypeRef::NonNull(v), TypeRef::NonNull(e)) => types_compatible(v, e),
        (_, TypeRef::NonNull(_)) => false,
        (TypeRef::NonNull(v), e) => types_compatible(v, e),
        (TypeRef::List(v), TypeRef::List(e)) => types_compatible(v, e),
        (TypeRef::List(_), _) | (_, TypeRef::List(_)) => false,
        (TypeRef::Named(v), TypeRef::Named(e)) => v == e,
    }
}

/// Records the variables in `value` with the type expected at their position.
fn collect_vars(
    types: &crate::schema::TypeMap,
    value: &Ast,
    ty: &TypeRef,
    location_has_default: bool,
    pos: Pos,
    out: &mut Vec<VarUsage>,
) {
    match value {
        Ast::Variable(name) => out.push(VarUsage {
            name: name.clone(),
            expected: Some(ty.clone()),
            location_has_default,
            pos,
        }),
        Ast::List(_) | Ast::Object(_)
            if matches!(ty.nullable(), TypeRef::Named(_))
                && matches!(
                    types.get(ty.base_name()),
                    Some(TypeDef::Scalar(ScalarDef {
                        kind: ScalarKind::Custom,
                        ..
                    }))
                ) =>
        {
            collect_any_vars(value, pos, out);
        }
        Ast::List(items) => {
            let item_ty = match ty.nullable() {
                TypeRef::List(item) => item.as_ref().clone(),
                other => other.clone(),
            };
            for item in items {
                collect_vars(types, item, &item_ty, false, pos, out);
            }
        }
        Ast::Object(fields) => {
            if let Some(TypeDef::InputObject(i)) = types.get(ty.base_name()) {
                for (name, v) in fields {
                    if let Some(f) = i.fields.get(name) {
                        collect_vars(types, v, &f.ty, f.default.is_some(), pos, out);
                    }
                }
            }
        }
        _ => {}
    }
}

fn collect_any_vars(value: &Ast, pos: Pos, out: &mut Vec<VarUsage>) {
    match value {
        Ast::Variable(name) => out.push(VarUsage {
            name: name.clone(),
            expected: None,
            location_has_default: true,
            pos,
        }),
        Ast::List(items) => items.iter().for_each(|v| collect_any_vars(v, pos, out)),
        Ast::Object(fields) => fields.values().for_each(|v| collect_any_vars(v, pos, out)),
        _ => {}
    }
}

/// Walks the operation with fragments expanded, as the executor will.
struct Shape<'v, 'a> {
    validator: &'v mut Validator<'a>,
    fields: usize,
    stop: bool,
}

impl<'a> Shape<'_, 'a> {
    fn walk(&mut self, parent: &ObjectDef, sets: &[&Set], depth: usize) {
        if self.stop {
            return;
        }
        let limits = &self.validator.schema.limits;
        if depth > limits.max_depth {
            let pos = sets.first().map(|s| s.span.0).unwrap_or_default();
            self.validator.error(
                format!(
                    "query is nested deeper than the limit of {}",
                    limits.max_depth
                ),
                pos,
            );
            self.stop = true;
            return;
        }
        type FieldNode = crate::ast::Field;
        let mut grouped: indexmap::IndexMap<&str, Vec<&FieldNode>> = indexmap::IndexMap::new();
        for set in sets {
            // Like CollectFields: each fragment expands once per selection set, which also
            // keeps `...A ...A` chains from growing exponentially.
            let mut visited = Vec::new();
            self.collect(set, &mut grouped, &mut visited);
        }
        self.fields += grouped.values().map(Vec::len).sum::<usize>();
        if self.fields > limits.max_fields {
            self.validator.errors.push(GqlError::new(format!(
                "query selects more than the limit of {} fields",
                limits.max_fields
            )));
            self.stop = true;
            return;
        }
        for (key, nodes) in grouped {
            let first = nodes[0];
            for other in &nodes[1..] {
                if other.name != first.name {
                    self.validator.error(
                        format!(
                            "fields {key:?} conflict because {:?} and {:?} are different fields; use different aliases",
                            first.name, other.name
                        ),
                        other.position,
                    );
                } else if !same_arguments(&first.arguments, &other.arguments) {
                    self.validator.error(
                        format!("fields {key:?} conflict because they have differing arguments; use different aliases"),
                        other.position,
                    );
                }
            }
            if first.name == "__typename" {
                continue;
            }
            let Some(def) = parent.fields.get(&first.name) else {
                continue;
            };
            if let Some(TypeDef::Object(child)) =
                self.validator.schema.types.get(def.ty.base_name())
            {
                let child_sets: Vec<&Set> = nodes
                    .iter()
                    .filter(|n| n.name == first.name)
                    .map(|n| &n.selection_set)
                    .collect();
                self.walk(child, &child_sets, depth + 1);
            }
        }
    }

    fn collect<'s>(
        &mut self,
        set: &'s Set,
        out: &mut indexmap::IndexMap<&'s str, Vec<&'s crate::ast::Field>>,
        visited: &mut Vec<&'s str>,
    ) where
        'a: 's,
    {
        for item in &set.items {
            match item {
                Selection::Field(f) => out
                    .entry(f.alias.as_deref().unwrap_or(&f.name))
                    .or_default()
                    .push(f),
                Selection::InlineFragment(i) => self.collect(&i.selection_set, out, visited),
                Selection::FragmentSpread(s) => {
                    if visited.contains(&s.fragment_name.as_str()) {
                        continue;
                    }
                    let doc: &'a ValidDocument = self.validator.doc;
                    if let Some(frag) = doc.fragment(&s.fragment_name) {
                        visited.push(&frag.name);
                        self.collect(&frag.selection_set, out, visited);
                    }
                }
            }
        }
    }
}

fn same_arguments(a: &[(String, Ast)], b: &[(String, Ast)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(name, value)| b.iter().any(|(n, v)| n == name && v == value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Field, Limits, Object, Value};

    fn schema(limits: Limits) -> Schema {
        Schema::build()
            .object(
                Object::new("Query")
                    .field(Field::new("v", "Int").resolve_sync(|_| Ok(Value::leaf(1)))),
            )
            .limits(limits)
            .finish()
            .unwrap()
    }

    #[test]
    fn valid_small_documents_are_cached() {
        let s = schema(Limits {
            max_cached_documents: 2,
            max_cached_document_bytes: 20,
            ..Limits::default()
        });
        let a = prepare(&s, "{ v }").unwrap();
        assert!(Arc::ptr_eq(&a, &prepare(&s, "{ v }").unwrap()));
        let long = format!("{{ v {} }}", " ".repeat(20));
        let b = prepare(&s, &long).unwrap();
        assert!(
            !Arc::ptr_eq(&b, &prepare(&s, &long).unwrap()),
            "documents over the size are not cached"
        );
        assert!(prepare(&s, "{ nope }").is_err());
        assert_eq!(s.inner.doc_cache.lock().len(), 1);
        prepare(&s, "{ a: v }").unwrap();
        prepare(&s, "{ b: v }").unwrap();
        assert!(
            s.inner.doc_cache.lock().len() <= 2,
            "the cache stays bounded"
        );
    }
}
