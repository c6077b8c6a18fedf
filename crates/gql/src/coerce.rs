//! Input coercion: GraphQL literals (with variables) and JSON variable values into [`ArgValue`]s,
//! per the spec's input coercion rules (Int to Float, single values into lists, enums, input
//! objects with defaults).

use crate::ast::Value as Ast;
use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::schema::{ScalarKind, TypeDef, TypeMap};
use crate::types::TypeRef;
use crate::value::ArgValue;

/// Coerced variable values; `None` while validating (variables are checked by position instead).
pub(crate) type Vars<'v> = Option<&'v IndexMap<String, ArgValue>>;

fn describe_json(json: &Json) -> String {
    let text = json.to_string();
    if text.len() > 80 {
        format!("{}...", &text[..text.floor_char_boundary(77)])
    } else {
        text
    }
}

fn describe_ast(value: &Ast) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        format!("{}...", &text[..text.floor_char_boundary(77)])
    } else {
        text
    }
}

/// Coerces a JSON value (a variable value or a schema default) to `ty`.
pub(crate) fn coerce_json(types: &TypeMap, json: &Json, ty: &TypeRef) -> Result<ArgValue, String> {
    match ty {
        TypeRef::NonNull(inner) => {
            if json.is_null() {
                return Err(format!("expected non-null value of type {ty}, found null"));
            }
            coerce_json(types, json, inner)
        }
        _ if json.is_null() => Ok(ArgValue::Null),
        TypeRef::List(item) => match json {
            Json::Array(items) => Ok(ArgValue::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        coerce_json(types, v, item).map_err(|e| format!("at index {i}: {e}"))
                    })
                    .collect::<Result<_, _>>()?,
            )),
            other => Ok(ArgValue::List(vec![coerce_json(types, other, item)?])),
        },
        TypeRef::Named(name) => {
            let def = types
                .get(name)
                .ok_or_else(|| format!("unknown type {name}"))?;
            let mismatch = || format!("expected type {name}, found {}", describe_json(json));
            match def {
                TypeDef::Scalar(s) => match (&s.kind, json) {
                    (ScalarKind::String, Json::String(v)) => Ok(ArgValue::String(v.clone())),
                    (ScalarKind::Boolean, Json::Bool(b)) => Ok(ArgValue::Boolean(*b)),
                    (ScalarKind::Int, Json::Number(n)) => {
                        if let Some(i) = n.as_i64() {
                            Ok(ArgValue::Int(i))
                        } else if let Some(f) =
                            n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        {
                            Ok(ArgValue::Int(f as i64))
                        } else {
                            Err(mismatch())
                        }
                    }
                    (ScalarKind::Float, Json::Number(n)) => {
                        n.as_f64().map(ArgValue::Float).ok_or_else(mismatch)
                    }
                    (ScalarKind::Id, Json::String(v))
                    | (ScalarKind::ObjectId(_), Json::String(v)) => Ok(ArgValue::String(v.clone())),
                    (ScalarKind::Id, Json::Number(n)) if n.is_i64() || n.is_u64() => {
                        Ok(ArgValue::String(n.to_string()))
                    }
                    (ScalarKind::Custom, other) => Ok(ArgValue::from_json(other)),
                    _ => Err(mismatch()),
                },
                TypeDef::Enum(e) => match json {
                    Json::String(v) if e.values.contains_key(v) => Ok(ArgValue::Enum(v.clone())),
                    _ => Err(format!(
                        "value {} does not exist in enum {name}",
                        describe_json(json)
                    )),
                },
                TypeDef::InputObject(i) => {
                    let Json::Object(given) = json else {
                        return Err(mismatch());
                    };
                    if let Some(unknown) = given.keys().find(|k| !i.fields.contains_key(*k)) {
                        return Err(format!("field {unknown:?} is not defined by type {name}"));
                    }
                    let mut out = IndexMap::new();
                    for (fname, field) in &i.fields {
                        match given.get(fname) {
                            Some(v) => {
                                let value = coerce_json(types, v, &field.ty)
                                    .map_err(|e| format!("in field {fname:?}: {e}"))?;
                                out.insert(fname.clone(), value);
                            }
                            None => {
                                if let Some(default) = &field.default {
                                    out.insert(fname.clone(), default.clone());
                                } else if field.ty.is_non_null() {
                                    return Err(format!(
                                        "field {name}.{fname} of required type {} was not provided",
                                        field.ty
                                    ));
                                }
                            }
                        }
                    }
                    Ok(ArgValue::Object(out))
                }
                TypeDef::Object(_) => Err(format!("{name} is not an input type")),
            }
        }
    }
}

/// Result of coercing a literal that may be (or contain) variables.
pub(crate) enum Coerced {
    /// A value.
    Value(ArgValue),
    /// A variable that was not provided (the caller applies defaults).
    Missing,
}

/// Coerces a literal (possibly containing variables) to `ty`.
pub(crate) fn coerce_literal(
    types: &TypeMap,
    value: &Ast,
    ty: &TypeRef,
    vars: Vars<'_>,
) -> Result<Coerced, String> {
    if let Ast::Variable(var) = value {
        return match vars {
            // Validation: the variable's position is checked separately.
            None => Ok(Coerced::Value(ArgValue::Null)),
            Some(vars) => match vars.get(var) {
                None => Ok(Coerced::Missing),
                Some(ArgValue::Null) if ty.is_non_null() => {
                    Err(format!("variable ${var} is null but type {ty} is required"))
                }
                Some(v) => Ok(Coerced::Value(v.clone())),
            },
        };
    }
    match ty {
        TypeRef::NonNull(inner) => {
            if matches!(value, Ast::Null) {
                return Err(format!("expected value of type {ty}, found null"));
            }
            coerce_literal(types, value, inner, vars)
        }
        _ if matches!(value, Ast::Null) => Ok(Coerced::Value(ArgValue::Null)),
        TypeRef::List(item) => match value {
            Ast::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    match coerce_literal(types, v, item, vars)
                        .map_err(|e| format!("at index {i}: {e}"))?
                    {
                        Coerced::Value(v) => out.push(v),
                        Coerced::Missing if item.is_non_null() => {
                            return Err(format!("at index {i}: missing variable for type {item}"));
                        }
                        Coerced::Missing => out.push(ArgValue::Null),
                    }
                }
                Ok(Coerced::Value(ArgValue::List(out)))
            }
            other => match coerce_literal(types, other, item, vars)? {
                Coerced::Value(v) => Ok(Coerced::Value(ArgValue::List(vec![v]))),
                Coerced::Missing => Ok(Coerced::Missing),
            },
        },
        TypeRef::Named(name) => {
            let def = types
                .get(name)
                .ok_or_else(|| format!("unknown type {name}"))?;
            let mismatch = || format!("expected type {name}, found {}", describe_ast(value));
            let v = match def {
                TypeDef::Scalar(s) => match (&s.kind, value) {
                    (ScalarKind::String, Ast::String(v)) => ArgValue::String(v.clone()),
                    (ScalarKind::Boolean, Ast::Boolean(b)) => ArgValue::Boolean(*b),
                    (ScalarKind::Int, Ast::Int(n)) => {
                        ArgValue::Int(n.as_i64().ok_or_else(mismatch)?)
                    }
                    (ScalarKind::Float, Ast::Int(n)) => {
                        ArgValue::Float(n.as_i64().ok_or_else(mismatch)? as f64)
                    }
                    (ScalarKind::Float, Ast::Float(f)) => ArgValue::Float(*f),
                    (ScalarKind::Id, Ast::String(v))
                    | (ScalarKind::ObjectId(_), Ast::String(v)) => ArgValue::String(v.clone()),
                    (ScalarKind::Id, Ast::Int(n)) => {
                        ArgValue::String(n.as_i64().ok_or_else(mismatch)?.to_string())
                    }
                    (ScalarKind::Custom, other) => custom_literal(other, vars)?,
                    _ => return Err(mismatch()),
                },
                TypeDef::Enum(e) => match value {
                    Ast::Enum(v) if e.values.contains_key(v) => ArgValue::Enum(v.clone()),
                    Ast::Enum(v) => return Err(format!("value {v} does not exist in enum {name}")),
                    _ => {
                        return Err(format!(
                            "enum {name} cannot represent non-enum value {}",
                            describe_ast(value)
                        ));
                    }
                },
                TypeDef::InputObject(i) => {
                    let Ast::Object(given) = value else {
                        return Err(mismatch());
                    };
                    if let Some(unknown) = given.keys().find(|k| !i.fields.contains_key(*k)) {
                        return Err(format!("field {unknown:?} is not defined by type {name}"));
                    }
                    let mut out = IndexMap::new();
                    for (fname, field) in &i.fields {
                        let given_value = match given.get(fname) {
                            Some(v) => coerce_literal(types, v, &field.ty, vars)
                                .map_err(|e| format!("in field {fname:?}: {e}"))?,
                            None => Coerced::Missing,
                        };
                        match given_value {
                            Coerced::Value(v) => {
                                out.insert(fname.clone(), v);
                            }
                            Coerced::Missing => {
                                if let Some(default) = &field.default {
                                    out.insert(fname.clone(), default.clone());
                                } else if field.ty.is_non_null() {
                                    return Err(format!(
                                        "field {name}.{fname} of required type {} was not provided",
                                        field.ty
                                    ));
                                }
                            }
                        }
                    }
                    ArgValue::Object(out)
                }
                TypeDef::Object(_) => return Err(format!("{name} is not an input type")),
            };
            Ok(Coerced::Value(v))
        }
    }
}

/// A custom scalar's literal: any value, variables substituted.
fn custom_literal(value: &Ast, vars: Vars<'_>) -> Result<ArgValue, String> {
    Ok(match value {
        Ast::Variable(var) => match vars {
            None => ArgValue::Null,
            Some(vars) => vars.get(var).cloned().unwrap_or(ArgValue::Null),
        },
        Ast::Int(n) => ArgValue::Int(n.as_i64().unwrap_or_default()),
        Ast::Float(f) => ArgValue::Float(*f),
        Ast::String(s) | Ast::Enum(s) => ArgValue::String(s.clone()),
        Ast::Boolean(b) => ArgValue::Boolean(*b),
        Ast::Null => ArgValue::Null,
        Ast::List(items) => ArgValue::List(
            items
                .iter()
                .map(|v| custom_literal(v, vars))
                .collect::<Result<_, _>>()?,
        ),
        Ast::Object(fields) => ArgValue::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), custom_literal(v, vars)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}
