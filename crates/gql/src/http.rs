//! The JSON request and response bodies of GraphQL over HTTP.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value as Json};

/// A GraphQL request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The query document.
    pub query: String,
    /// Variable values (`null` or absent means none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Map<String, Json>>,
    /// Which operation of the document to run.
    #[serde(
        rename = "operationName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub operation_name: Option<String>,
}

impl Request {
    /// A request for `query` with no variables.
    pub fn new(query: impl Into<String>) -> Request {
        Request {
            query: query.into(),
            variables: None,
            operation_name: None,
        }
    }

    /// Sets the variables (a JSON object; anything else is ignored).
    pub fn variables(mut self, variables: Json) -> Request {
        self.variables = match variables {
            Json::Object(map) => Some(map),
            _ => None,
        };
        self
    }

    /// Sets the operation name.
    pub fn operation_name(mut self, name: impl Into<String>) -> Request {
        self.operation_name = Some(name.into());
        self
    }
}

/// A position in the query document (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl From<crate::ast::Pos> for Location {
    fn from(pos: crate::ast::Pos) -> Location {
        Location {
            line: pos.line,
            column: pos.column,
        }
    }
}

/// One segment of an error path: a response key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathSegment {
    /// A list index.
    Index(usize),
    /// A response key (alias or field name).
    Key(String),
}

/// An error in a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GqlError {
    /// Human readable message.
    pub message: String,
    /// Where in the document.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
    /// Which response field failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<PathSegment>,
    /// Extra data (e.g. `_type: "EXEC_ERROR"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Json>>,
}

impl GqlError {
    /// An error with just a message.
    pub fn new(message: impl Into<String>) -> GqlError {
        GqlError {
            message: message.into(),
            locations: Vec::new(),
            path: Vec::new(),
            extensions: None,
        }
    }

    /// Adds a location.
    pub fn at(mut self, pos: crate::ast::Pos) -> GqlError {
        self.locations.push(pos.into());
        self
    }
}

/// A GraphQL response body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The result: absent when the request failed before execution, `null` when a non-null root
    /// field failed.
    #[serde(
        default,
        deserialize_with = "present_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<Json>,
    /// Errors, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<GqlError>,
}

fn present_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(d).map(Some)
}

impl Response {
    /// A response holding only errors.
    pub fn from_errors(errors: Vec<GqlError>) -> Response {
        Response { data: None, errors }
    }

    /// The response as JSON.
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self)
            .unwrap_or_else(|e| serde_json::json!({"errors": [{"message": e.to_string()}]}))
    }

    /// Whether there are no errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_accepts_null_variables_and_operation_name() {
        let r: Request =
            serde_json::from_str(r#"{"query":"{a}","variables":null,"operationName":null}"#)
                .unwrap();
        assert_eq!(r.query, "{a}");
        assert!(r.variables.is_none());
        let r: Request =
            serde_json::from_str(r#"{"query":"{a}","variables":{"x":1},"operationName":"Q"}"#)
                .unwrap();
        assert_eq!(r.operation_name.as_deref(), Some("Q"));
        assert_eq!(r.variables.unwrap()["x"], 1);
    }

    #[test]
    fn response_keeps_null_data_distinct_from_absent() {
        let with_null = Response {
            data: Some(Json::Null),
            errors: vec![GqlError::new("boom")],
        };
        let text = serde_json::to_string(&with_null).unwrap();
        assert_eq!(text, r#"{"data":null,"errors":[{"message":"boom"}]}"#);
        let back: Response = serde_json::from_str(&text).unwrap();
        assert_eq!(back, with_null);
        let absent = Response::from_errors(vec![GqlError::new("bad")]);
        assert_eq!(
            serde_json::to_string(&absent).unwrap(),
            r#"{"errors":[{"message":"bad"}]}"#
        );
    }
}
