//! Call chains: how an object was produced from the root `Query`, and the opaque, content-addressed
//! ID strings that encode them.
//!
//! Encoding: an ID is standard base64 of a compact JSON array with one entry per call,
//! `{"f": field, "a": {arg: canonical value, ...}, "r": {arg: digest}, "t": type, "n": nth}`,
//! arguments sorted by name (`a`/`r`/`n` omitted when empty), input objects in definition order,
//! arguments equal to their default left out, and
//! sensitive arguments only as the digest of their value (`r`).

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use serde_json::{Map, Value as Json};
use sha2::Digest as _;

/// Errors decoding an ID string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not base64.
    #[error("invalid ID {id:?}: not base64")]
    NotBase64 {
        /// The offending ID (truncated).
        id: String,
    },
    /// Base64 but not a call chain.
    #[error("invalid ID {id:?}: {reason}")]
    Malformed {
        /// The offending ID (truncated).
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// One argument as recorded in a call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallArg {
    /// The canonical value (JSON; enums as strings, objects as their nested call array).
    Value(Json),
    /// A sensitive argument: only `sha256:<hex>` of its value.
    Redacted(String),
}

/// One field call in a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The field name (never the alias).
    pub field: String,
    /// Arguments sorted by name, defaults left out.
    pub args: Vec<(String, CallArg)>,
    /// The concrete type name of the result object.
    pub type_name: String,
    /// 1-based index when the object is an item of a list result.
    pub nth: Option<u32>,
    /// What a scoped field recorded from the request that made the call (see
    /// [`crate::Field::scoped`]); replays see this value, not their own request's.
    pub scope: Option<String>,
}

impl Call {
    fn to_json(&self) -> Json {
        let mut obj = Map::new();
        obj.insert("f".into(), Json::String(self.field.clone()));
        let mut values = Map::new();
        let mut redacted = Map::new();
        for (name, arg) in &self.args {
            match arg {
                CallArg::Value(v) => values.insert(name.clone(), v.clone()),
                CallArg::Redacted(d) => redacted.insert(name.clone(), Json::String(d.clone())),
            };
        }
        if !values.is_empty() {
            obj.insert("a".into(), Json::Object(values));
        }
        if !redacted.is_empty() {
            obj.insert("r".into(), Json::Object(redacted));
        }
        obj.insert("t".into(), Json::String(self.type_name.clone()));
        if let Some(n) = self.nth {
            obj.insert("n".into(), Json::from(n));
        }
        if let Some(scope) = &self.scope {
            obj.insert("s".into(), Json::String(scope.clone()));
        }
        Json::Object(obj)
    }

    fn from_json(json: &Json) -> Result<Call, String> {
        let obj = json.as_object().ok_or("call is not an object")?;
        let text = |key: &str| -> Result<String, String> {
            obj.get(key)
                .and_then(Json::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("call has no string {key:?}"))
        };
        let mut args = Vec::new();
        if let Some(values) = obj.get("a") {
            let values = values
                .as_object()
                .ok_or("call arguments are not an object")?;
            for (name, value) in values {
                args.push((name.clone(), CallArg::Value(value.clone())));
            }
        }
        if let Some(redacted) = obj.get("r") {
            let redacted = redacted
                .as_object()
                .ok_or("redacted arguments are not an object")?;
            for (name, digest) in redacted {
                let digest = digest.as_str().ok_or("redacted digest is not a string")?;
                args.push((name.clone(), CallArg::Redacted(digest.to_string())));
            }
        }
        args.sort_by(|a, b| a.0.cmp(&b.0));
        let nth = match obj.get("n") {
            None => None,
            Some(n) => Some(
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or("list index is not a number")?,
            ),
        };
        for key in obj.keys() {
            if !matches!(key.as_str(), "f" | "a" | "r" | "t" | "n" | "s") {
                return Err(format!("unknown call key {key:?}"));
            }
        }
        let scope = match obj.get("s") {
            None => None,
            Some(s) => Some(s.as_str().ok_or("call scope is not a string")?.to_string()),
        };
        Ok(Call {
            field: text("f")?,
            args,
            type_name: text("t")?,
            nth,
            scope,
        })
    }
}

/// Decoded IDs may hold at most this many calls.
pub const MAX_CHAIN_CALLS: usize = 65_536;

/// The chain of calls from the root `Query` that produced an object (a persistent list: appending
/// shares the parent).
#[derive(Debug)]
pub struct CallChain {
    parent: Option<Arc<CallChain>>,
    call: Option<Call>,
    len: usize,
    id: OnceLock<String>,
}

impl CallChain {
    /// The empty chain of the root `Query` object.
    pub fn root() -> Arc<CallChain> {
        Arc::new(CallChain {
            parent: None,
            call: None,
            len: 0,
            id: OnceLock::new(),
        })
    }

    /// This chain followed by `call`.
    pub fn append(self: &Arc<Self>, call: Call) -> Arc<CallChain> {
        Arc::new(CallChain {
            parent: Some(Arc::clone(self)),
            call: Some(call),
            len: self.len + 1,
            id: OnceLock::new(),
        })
    }

    /// Number of calls.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether this is the root chain.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last call, if any.
    pub fn last(&self) -> Option<&Call> {
        self.call.as_ref()
    }

    /// The chain without its last call.
    pub fn parent(&self) -> Option<&Arc<CallChain>> {
        self.parent.as_ref()
    }

    /// The type name of the object at the end of the chain (`None` for the root).
    pub fn type_name(&self) -> Option<&str> {
        self.call.as_ref().map(|c| c.type_name.as_str())
    }

    /// The calls from the root, in order.
    pub fn calls(&self) -> Vec<&Call> {
        let mut out = Vec::with_capacity(self.len);
        let mut node = self;
        loop {
            if let Some(call) = &node.call {
                out.push(call);
            }
            match &node.parent {
                Some(parent) => node = parent,
                None => break,
            }
        }
        out.reverse();
        out
    }

    /// The canonical JSON encoding of the chain.
    pub fn canonical(&self) -> String {
        self.to_json().to_string()
    }

    /// The chain as a JSON array of calls (how object arguments nest inside a call).
    pub(crate) fn to_json(&self) -> Json {
        Json::Array(self.calls().into_iter().map(Call::to_json).collect())
    }

    /// Rebuilds a chain from [`CallChain::to_json`] output.
    pub(crate) fn from_json(json: &Json) -> Result<Arc<CallChain>, String> {
        let calls = json.as_array().ok_or("not a list of calls")?;
        if calls.is_empty() {
            return Err("empty call chain".into());
        }
        if calls.len() > MAX_CHAIN_CALLS {
            return Err(format!("more than {MAX_CHAIN_CALLS} calls"));
        }
        let mut chain = CallChain::root();
        for call in calls {
            chain = chain.append(Call::from_json(call)?);
        }
        Ok(chain)
    }

    /// The opaque ID string (standard base64 of [`CallChain::canonical`]).
    pub fn id(&self) -> String {
        self.id
            .get_or_init(|| base64::engine::general_purpose::STANDARD.encode(self.canonical()))
            .clone()
    }

    /// `sha256:<hex>` of the canonical encoding: a cache key for the object.
    pub fn digest(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(self.canonical().as_bytes()))
        )
    }

    /// Decodes an ID string (structure only: types are checked when it is loaded).
    pub fn decode(id: &str) -> Result<Arc<CallChain>, IdError> {
        let short: String = id.chars().take(64).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(id.trim())
            .map_err(|_| IdError::NotBase64 { id: short.clone() })?;
        let malformed = |reason: String| IdError::Malformed {
            id: short.clone(),
            reason,
        };
        let json: Json = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        CallChain::from_json(&json).map_err(malformed)
    }
}

impl Drop for CallChain {
    /// Unlinks iteratively: dropping a long chain must not recurse once per call.
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some(parent) = next {
            match Arc::try_unwrap(parent) {
                Ok(mut node) => next = node.parent.take(),
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Arc<CallChain> {
        CallChain::root()
            .append(Call {
                field: "container".into(),
                args: vec![],
                type_name: "Container".into(),
                nth: None,
                scope: None,
            })
            .append(Call {
                field: "withSecret".into(),
                args: vec![
                    ("a".into(), CallArg::Value(serde_json::json!(["x", 1]))),
                    ("b".into(), CallArg::Redacted("sha256:00".into())),
                ],
                type_name: "Container".into(),
                nth: Some(2),
                scope: Some("client-1".into()),
            })
    }

    #[test]
    fn encode_decode_round_trip() {
        let chain = sample();
        let decoded = CallChain::decode(&chain.id()).unwrap();
        assert_eq!(decoded.id(), chain.id());
        assert_eq!(decoded.calls(), chain.calls());
        assert_eq!(decoded.type_name(), Some("Container"));
        assert_eq!(decoded.len(), 2);
    }

    #[test]
    fn long_chains_drop_without_deep_recursion() {
        let handle = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| {
                let mut chain = CallChain::root();
                for _ in 0..MAX_CHAIN_CALLS {
                    chain = chain.append(Call {
                        field: "f".into(),
                        args: vec![],
                        type_name: "T".into(),
                        nth: None,
                        scope: None,
                    });
                }
                let id = chain.id();
                drop(chain);
                let decoded = CallChain::decode(&id).unwrap();
                assert_eq!(decoded.len(), MAX_CHAIN_CALLS);
            })
            .unwrap();
        handle.join().unwrap();
        let too_long = format!(
            "[{}]",
            vec![r#"{"f":"f","t":"T"}"#; MAX_CHAIN_CALLS + 1].join(",")
        );
        let id = base64::engine::general_purpose::STANDARD.encode(too_long);
        assert!(
            CallChain::decode(&id)
                .unwrap_err()
                .to_string()
                .contains("more than 65536 calls")
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            CallChain::decode("!!!"),
            Err(IdError::NotBase64 { .. })
        ));
        let not_chain = base64::engine::general_purpose::STANDARD.encode("{}");
        assert!(matches!(
            CallChain::decode(&not_chain),
            Err(IdError::Malformed { .. })
        ));
        let empty = base64::engine::general_purpose::STANDARD.encode("[]");
        assert!(matches!(
            CallChain::decode(&empty),
            Err(IdError::Malformed { .. })
        ));
    }
}
