//! Values flowing through the executor: what resolvers return ([`Value`]), what they receive as
//! arguments ([`ArgValue`]), and the error they may fail with ([`FieldError`]).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::chain::CallChain;

/// Errors converting an argument value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A loaded object or redacted value cannot be turned into plain JSON.
    #[error("argument value is {what}, not plain data")]
    NotPlainData {
        /// What was found instead.
        what: &'static str,
    },
}

/// An object produced by a resolver: its concrete GraphQL type name and its Rust value.
#[derive(Clone)]
pub struct ObjectValue {
    pub(crate) type_name: Arc<str>,
    pub(crate) data: Arc<dyn Any + Send + Sync>,
    /// Set only by the executor when an object keeps the call chain it was loaded from.
    pub(crate) chain: Option<Arc<CallChain>>,
}

impl ObjectValue {
    /// The concrete GraphQL type name.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Downcasts the Rust value.
    pub fn downcast<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        Arc::clone(&self.data).downcast::<T>().ok()
    }
}

impl fmt::Debug for ObjectValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectValue")
            .field("type_name", &self.type_name)
            .finish_non_exhaustive()
    }
}

/// What a resolver returns.
#[derive(Debug, Clone)]
pub enum Value {
    /// `null`.
    Null,
    /// A scalar or enum value as JSON (enums as their name string).
    Leaf(Json),
    /// A list of values.
    List(Vec<Value>),
    /// An object of a named GraphQL object type.
    Object(ObjectValue),
}

impl Value {
    /// An object value of GraphQL type `type_name` wrapping `data`.
    pub fn object<T: Any + Send + Sync>(type_name: &str, data: Arc<T>) -> Value {
        Value::Object(ObjectValue {
            type_name: Arc::from(type_name),
            data,
            chain: None,
        })
    }

    /// An object that keeps an existing call chain (and so that chain's ID) instead of recording
    /// the current call. Replaying the chain must produce an equivalent object.
    pub fn object_with_chain<T: Any + Send + Sync>(
        type_name: &str,
        data: Arc<T>,
        chain: Arc<CallChain>,
    ) -> Value {
        Value::Object(ObjectValue {
            type_name: Arc::from(type_name),
            data,
            chain: Some(chain),
        })
    }

    /// A leaf value from anything convertible into JSON (`null`, e.g. from `None`, is
    /// [`Value::Null`]).
    pub fn leaf(value: impl Into<Json>) -> Value {
        Value::from(value.into())
    }

    /// A list of leaf values.
    pub fn leaf_list<I: IntoIterator<Item = V>, V: Into<Json>>(items: I) -> Value {
        Value::List(items.into_iter().map(|v| Value::Leaf(v.into())).collect())
    }
}

impl From<Json> for Value {
    fn from(json: Json) -> Value {
        match json {
            Json::Null => Value::Null,
            other => Value::Leaf(other),
        }
    }
}

/// An object given as an ID argument, loaded by replaying its call chain.
#[derive(Clone)]
pub struct LoadedObject {
    pub(crate) object: ObjectValue,
    pub(crate) chain: Arc<CallChain>,
}

impl LoadedObject {
    /// The GraphQL type name of the loaded object.
    pub fn type_name(&self) -> &str {
        self.object.type_name()
    }

    /// Downcasts the Rust value.
    pub fn downcast<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.object.downcast()
    }

    /// The call chain that produced the object.
    pub fn chain(&self) -> &Arc<CallChain> {
        &self.chain
    }

    /// The object's ID string (canonical, re-encoded from its chain).
    pub fn id(&self) -> String {
        self.chain.id()
    }

    /// The object as a resolver result that keeps its own chain (and so its ID), as
    /// `load<Type>FromID` does; `Value::object` instead records the current call.
    pub fn to_value(&self) -> Value {
        let mut object = self.object.clone();
        object.chain = Some(Arc::clone(&self.chain));
        Value::Object(object)
    }
}

impl fmt::Debug for LoadedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedObject")
            .field("type_name", &self.object.type_name)
            .field("chain", &self.chain.id())
            .finish()
    }
}

/// A coerced argument (or input field) value as a resolver receives it.
#[derive(Debug, Clone)]
pub enum ArgValue {
    /// `null`.
    Null,
    /// A `Boolean`.
    Boolean(bool),
    /// An `Int` (64-bit, Dagger sizes exceed 32 bits).
    Int(i64),
    /// A `Float`.
    Float(f64),
    /// A `String`, `ID`, or the string form of an ID scalar.
    String(String),
    /// An enum value name.
    Enum(String),
    /// A list.
    List(Vec<ArgValue>),
    /// An input object (fields in definition order) or a custom scalar's JSON object.
    Object(IndexMap<String, ArgValue>),
    /// An object loaded from an `<Type>ID` argument.
    Loaded(LoadedObject),
    /// A sensitive argument replayed from an ID: only the digest of the original value is known.
    Redacted {
        /// `sha256:<hex>` of the original value (see [`ArgValue::redaction_digest`]).
        digest: String,
    },
}

impl PartialEq for ArgValue {
    fn eq(&self, other: &ArgValue) -> bool {
        match (self, other) {
            (ArgValue::Null, ArgValue::Null) => true,
            (ArgValue::Boolean(a), ArgValue::Boolean(b)) => a == b,
            (ArgValue::Int(a), ArgValue::Int(b)) => a == b,
            (ArgValue::Float(a), ArgValue::Float(b)) => a == b,
            (ArgValue::String(a), ArgValue::String(b)) => a == b,
            (ArgValue::Enum(a), ArgValue::Enum(b)) => a == b,
            (ArgValue::List(a), ArgValue::List(b)) => a == b,
            (ArgValue::Object(a), ArgValue::Object(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x == y)
            }
            (ArgValue::Loaded(a), ArgValue::Loaded(b)) => a.chain.id() == b.chain.id(),
            (ArgValue::Redacted { digest: a }, ArgValue::Redacted { digest: b }) => a == b,
            _ => false,
        }
    }
}

impl ArgValue {
    /// Plain JSON for this value (enums as strings, loaded objects as their ID string).
    /// Fails only on redacted values.
    pub fn to_json(&self) -> Result<Json, ValueError> {
        Ok(match self {
            ArgValue::Null => Json::Null,
            ArgValue::Boolean(b) => Json::Bool(*b),
            ArgValue::Int(i) => Json::from(*i),
            ArgValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            ArgValue::String(s) | ArgValue::Enum(s) => Json::String(s.clone()),
            ArgValue::List(items) => Json::Array(
                items
                    .iter()
                    .map(ArgValue::to_json)
                    .collect::<Result<_, _>>()?,
            ),
            ArgValue::Object(fields) => Json::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.to_json()?)))
                    .collect::<Result<_, ValueError>>()?,
            ),
            ArgValue::Loaded(obj) => Json::String(obj.id()),
            ArgValue::Redacted { .. } => return Err(ValueError::NotPlainData { what: "redacted" }),
        })
    }

    /// Converts plain JSON (e.g. a custom scalar's value) into an argument value.
    pub fn from_json(json: &Json) -> ArgValue {
        match json {
            Json::Null => ArgValue::Null,
            Json::Bool(b) => ArgValue::Boolean(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => ArgValue::Int(i),
                None => ArgValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => ArgValue::String(s.clone()),
            Json::Array(items) => ArgValue::List(items.iter().map(ArgValue::from_json).collect()),
            Json::Object(fields) => ArgValue::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), ArgValue::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The digest recorded in call chains in place of a sensitive argument:
    /// `sha256:` + hex of the SHA-256 of the string's bytes (for strings) or of the value's
    /// compact JSON encoding (anything else).
    pub fn redaction_digest(&self) -> String {
        use sha2::Digest;
        let bytes = match self {
            ArgValue::String(s) => s.as_bytes().to_vec(),
            ArgValue::Redacted { digest } => return digest.clone(),
            other => other
                .to_json()
                .map(|j| j.to_string())
                .unwrap_or_default()
                .into_bytes(),
        };
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
    }

    /// The value written as a GraphQL literal (used for `defaultValue` and SDL).
    pub fn to_literal(&self) -> String {
        let mut out = String::new();
        self.write_literal(&mut out);
        out
    }

    fn write_literal(&self, out: &mut String) {
        match self {
            ArgValue::Null => out.push_str("null"),
            ArgValue::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
            ArgValue::Int(i) => out.push_str(&i.to_string()),
            ArgValue::Float(f) => {
                let text =
                    serde_json::Number::from_f64(*f).map_or_else(|| "0".into(), |n| n.to_string());
                out.push_str(&text);
                if !text.contains(['.', 'e', 'E']) {
                    out.push_str(".0");
                }
            }
            ArgValue::String(s) => write_string_literal(s, out),
            ArgValue::Enum(e) => out.push_str(e),
            ArgValue::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_literal(out);
                }
                out.push(']');
            }
            ArgValue::Object(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(name);
                    out.push_str(": ");
                    value.write_literal(out);
                }
                out.push('}');
            }
            ArgValue::Loaded(obj) => write_string_literal(&obj.id(), out),
            ArgValue::Redacted { digest } => write_string_literal(digest, out),
        }
    }
}

/// Writes `s` as a quoted GraphQL string literal (JSON escaping is valid GraphQL escaping).
pub(crate) fn write_string_literal(s: &str, out: &mut String) {
    out.push_str(&Json::String(s.to_string()).to_string());
}

/// An error raised by a resolver (or by the executor for one field).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Human readable message.
    pub message: String,
    /// Extra data returned in the error's `extensions` (a JSON object).
    pub extensions: Option<serde_json::Map<String, Json>>,
}

impl FieldError {
    /// An error with a message and no extensions.
    pub fn new(message: impl Into<String>) -> FieldError {
        FieldError {
            message: message.into(),
            extensions: None,
        }
    }

    /// Adds an extension entry.
    pub fn with_extension(mut self, key: impl Into<String>, value: impl Into<Json>) -> FieldError {
        self.extensions
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_graphql_syntax() {
        let v = ArgValue::List(vec![
            ArgValue::String("a\"b\n".into()),
            ArgValue::Enum("SHARED".into()),
            ArgValue::Float(1.0),
            ArgValue::Int(-3),
            ArgValue::Object(
                [("k".to_string(), ArgValue::Boolean(false))]
                    .into_iter()
                    .collect(),
            ),
        ]);
        assert_eq!(v.to_literal(), r#"["a\"b\n", SHARED, 1.0, -3, {k: false}]"#);
    }

    #[test]
    fn redaction_digest_of_string_is_sha256_of_bytes() {
        let d = ArgValue::String("abc".into()).redaction_digest();
        assert_eq!(
            d,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
