//! [`CacheSpec`]: where a remote cache lives and what goes into it, parsed from BuildKit's
//! `type=registry,ref=REF[,mode=min|max]` or from a Dagger client's `{Type, Attrs}` entry.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use dagr_registry::Reference;

/// Which results an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportMode {
    /// The results a session asked for (the roots of its solves).
    #[default]
    Min,
    /// Every result a session's solves produced or used, intermediate ones included.
    Max,
}

/// A remote cache: a tag in an OCI registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub reference: Reference,
    /// Only meaningful for exports.
    pub mode: ExportMode,
}

/// Why a cache specification was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheSpecError {
    #[error("cache specification {spec:?}: {reason}")]
    Invalid { spec: String, reason: String },
}

impl CacheSpec {
    /// From a type and its attributes (Dagger's `CacheOptionsEntry`); `spec` names it in errors.
    pub fn from_attrs(
        spec: &str,
        kind: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<CacheSpec, CacheSpecError> {
        let refuse = |reason: String| CacheSpecError::Invalid {
            spec: spec.to_owned(),
            reason,
        };
        if kind != "registry" {
            return Err(refuse(format!(
                "cache type {kind:?} is not supported (only type=registry)"
            )));
        }
        for key in attrs.keys() {
            if !["ref", "mode"].contains(&key.as_str()) {
                return Err(refuse(format!(
                    "unknown attribute {key:?} (expected ref and mode)"
                )));
            }
        }
        let reference = attrs
            .get("ref")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| refuse("missing ref=REGISTRY/REPOSITORY[:TAG]".to_owned()))?;
        let reference = Reference::parse(reference).map_err(|e| refuse(e.to_string()))?;
        if reference.digest().is_some() {
            return Err(refuse(
                "ref names a digest; a cache is a tag that exports move".to_owned(),
            ));
        }
        let mode = match attrs.get("mode").map(String::as_str) {
            None | Some("min") => ExportMode::Min,
            Some("max") => ExportMode::Max,
            Some(other) => return Err(refuse(format!("mode {other:?} is not min or max"))),
        };
        Ok(CacheSpec { reference, mode })
    }
}

impl FromStr for CacheSpec {
    type Err = CacheSpecError;

    /// `type=registry,ref=REF[,mode=min|max]`.
    fn from_str(spec: &str) -> Result<CacheSpec, CacheSpecError> {
        let mut attrs = BTreeMap::new();
        for pair in spec.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| CacheSpecError::Invalid {
                    spec: spec.to_owned(),
                    reason: format!("{pair:?} is not KEY=VALUE"),
                })?;
            attrs.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        let kind = attrs
            .remove("type")
            .ok_or_else(|| CacheSpecError::Invalid {
                spec: spec.to_owned(),
                reason: "missing type=registry".to_owned(),
            })?;
        CacheSpec::from_attrs(spec, &kind, &attrs)
    }
}

impl fmt::Display for CacheSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            ExportMode::Min => "min",
            ExportMode::Max => "max",
        };
        write!(f, "type=registry,ref={},mode={mode}", self.reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_specs() {
        let s: CacheSpec = "type=registry,ref=127.0.0.1:5000/cache:main,mode=max"
            .parse()
            .expect("spec");
        assert_eq!(s.mode, ExportMode::Max);
        assert_eq!(s.reference.registry(), "127.0.0.1:5000");
        assert_eq!(s.reference.repository(), "cache");
        let s: CacheSpec = "type=registry,ref=127.0.0.1:5000/c".parse().expect("spec");
        assert_eq!(s.mode, ExportMode::Min);
        assert_eq!(
            s.to_string(),
            "type=registry,ref=127.0.0.1:5000/c:latest,mode=min"
        );
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        for (bad, says) in [
            ("ref=x/y", "missing type"),
            ("type=s3,ref=x", "not supported"),
            ("type=registry", "missing ref"),
            ("type=registry,ref=x/y,mode=all", "not min or max"),
            (
                "type=registry,ref=x/y,compression=zstd",
                "unknown attribute",
            ),
            ("type=registry,ref", "not KEY=VALUE"),
            (
                "type=registry,ref=x/y@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "digest",
            ),
        ] {
            let err = bad.parse::<CacheSpec>().expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }
}
