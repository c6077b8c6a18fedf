//! Cache keys: sha256 digests of a canonical encoding of an op definition and its inputs' keys.
//!
//! The op is encoded as canonical JSON (object keys sorted bytewise at every level, no
//! whitespace, serde_json's number and string formatting), so neither struct field order nor map
//! order affects the key. Each derivation starts with a distinct, versioned domain tag.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::op::Op;

const VERTEX_TAG: &[u8] = b"dagr-solver/vertex/v1\0";
const RESOLVED_TAG: &[u8] = b"dagr-solver/resolved/v1\0";
const CONTENT_TAG: &[u8] = b"dagr-solver/content/v1\0";

/// Errors parsing a [`CacheKey`].
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cache key {0:?} is not of the form sha256:<64 hex digits>")]
    Malformed(String),
}

/// A content-addressed cache key (a sha256 digest), shown as `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for CacheKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let malformed = || KeyError::Malformed(s.to_owned());
        let hex_part = s.strip_prefix("sha256:").ok_or_else(malformed)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| malformed())?;
        Ok(Self(bytes))
    }
}

impl Serialize for CacheKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CacheKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Writes `value` as canonical JSON.
pub(crate) fn canonical_json(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(k, out);
                out.push(b':');
                canonical_json(v, out);
            }
            out.push(b'}');
        }
    }
}

fn write_json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// The canonical encoding of an op.
pub fn canonical_op(op: &Op) -> Result<Vec<u8>, serde_json::Error> {
    let value = serde_json::to_value(op)?;
    let mut out = Vec::new();
    canonical_json(&value, &mut out);
    Ok(out)
}

/// sha256 of the canonical encoding of `op`.
pub(crate) fn op_digest(op: &Op) -> Result<[u8; 32], serde_json::Error> {
    Ok(Sha256::digest(canonical_op(op)?).into())
}

/// The key of a vertex: its op digest and its inputs' keys, in order.
pub(crate) fn derive(op_digest: &[u8; 32], inputs: impl Iterator<Item = CacheKey>) -> CacheKey {
    let mut h = Sha256::new();
    h.update(VERTEX_TAG);
    h.update(op_digest);
    for input in inputs {
        h.update(b"i");
        h.update(input.0);
    }
    CacheKey(h.finalize().into())
}

/// The key of a vertex whose runner resolved it to `digest`.
pub(crate) fn derive_resolved(base: CacheKey, digest: &str) -> CacheKey {
    let mut h = Sha256::new();
    h.update(RESOLVED_TAG);
    h.update(base.0);
    h.update((digest.len() as u64).to_be_bytes());
    h.update(digest.as_bytes());
    CacheKey(h.finalize().into())
}

/// The key of an impure result of kind `kind` with content digest `digest`.
pub(crate) fn derive_content(kind: &str, digest: &str) -> CacheKey {
    let mut h = Sha256::new();
    h.update(CONTENT_TAG);
    h.update((kind.len() as u64).to_be_bytes());
    h.update(kind.as_bytes());
    h.update((digest.len() as u64).to_be_bytes());
    h.update(digest.as_bytes());
    CacheKey(h.finalize().into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_escapes() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":"x\"\n\u0001","y":[true,null,-2.5]}}"#)
                .unwrap();
        let mut out = Vec::new();
        canonical_json(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"y":[true,null,-2.5],"z":"x\"\n\u0001"},"b":1}"#
        );
    }

    #[test]
    fn cache_key_round_trips_through_text() {
        let key = derive(&[7u8; 32], std::iter::empty());
        let text = key.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 71);
        assert_eq!(text.parse::<CacheKey>().unwrap(), key);
        assert!("sha256:zz".parse::<CacheKey>().is_err());
        assert!(hex::encode([0u8; 32]).parse::<CacheKey>().is_err());
    }

    #[test]
    fn derivations_are_domain_separated() {
        let base = derive(&[1u8; 32], std::iter::empty());
        assert_ne!(derive_resolved(base, "sha256:aa"), base);
        assert_ne!(
            derive_resolved(base, "sha256:aa"),
            derive_resolved(base, "sha256:ab")
        );
        assert_ne!(
            derive_content("host_dir", "x"),
            derive_content("host_dir", "y")
        );
        assert_ne!(derive_content("a", "bc"), derive_content("ab", "c"));
    }
}
