//! Type references (`String`, `[Int!]!`, ...) as written in field and argument signatures.

use std::fmt;

/// Errors parsing a type reference such as `[String!]!`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeRefError {
    /// The text is not a valid GraphQL type reference.
    #[error("invalid type reference {text:?}: {reason}")]
    Invalid {
        /// The text that failed to parse.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A GraphQL type reference: a named type, possibly wrapped in lists and non-null markers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TypeRef {
    /// A named type such as `String` or `Container`.
    Named(String),
    /// `[T]`.
    List(Box<TypeRef>),
    /// `T!`.
    NonNull(Box<TypeRef>),
}

impl TypeRef {
    /// Parses a type reference written in GraphQL syntax, e.g. `[String!]!`.
    pub fn parse(text: &str) -> Result<TypeRef, TypeRefError> {
        let trimmed = text.trim();
        let invalid = |reason| TypeRefError::Invalid {
            text: text.to_string(),
            reason,
        };
        if let Some(inner) = trimmed.strip_suffix('!') {
            let inner = TypeRef::parse(inner).map_err(|_| invalid("invalid inner type"))?;
            if matches!(inner, TypeRef::NonNull(_)) {
                return Err(invalid("double non-null marker"));
            }
            return Ok(TypeRef::NonNull(Box::new(inner)));
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let inner = rest
                .strip_suffix(']')
                .ok_or_else(|| invalid("unclosed list"))?;
            let inner = TypeRef::parse(inner).map_err(|_| invalid("invalid list item type"))?;
            return Ok(TypeRef::List(Box::new(inner)));
        }
        if is_name(trimmed) {
            Ok(TypeRef::Named(trimmed.to_string()))
        } else {
            Err(invalid("not a GraphQL name"))
        }
    }

    /// The innermost named type.
    pub fn base_name(&self) -> &str {
        match self {
            TypeRef::Named(name) => name,
            TypeRef::List(inner) | TypeRef::NonNull(inner) => inner.base_name(),
        }
    }

    /// Whether the outermost wrapper is non-null.
    pub fn is_non_null(&self) -> bool {
        matches!(self, TypeRef::NonNull(_))
    }

    /// The type without its outermost non-null marker.
    pub fn nullable(&self) -> &TypeRef {
        match self {
            TypeRef::NonNull(inner) => inner,
            other => other,
        }
    }
}

impl fmt::Display for TypeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeRef::Named(name) => f.write_str(name),
            TypeRef::List(inner) => write!(f, "[{inner}]"),
            TypeRef::NonNull(inner) => write!(f, "{inner}!"),
        }
    }
}

/// Whether `s` is a GraphQL name (`/[_A-Za-z][_0-9A-Za-z]*/`).
pub(crate) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_wrappers() {
        for text in ["String", "String!", "[String]", "[String!]!", "[[Int]!]"] {
            let parsed = TypeRef::parse(text).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(TypeRef::parse("[Foo!]!").unwrap().base_name(), "Foo");
    }

    #[test]
    fn rejects_malformed() {
        for text in ["", "String!!", "[String", "1abc", "a-b", "[]"] {
            assert!(TypeRef::parse(text).is_err(), "{text} should fail");
        }
    }
}
