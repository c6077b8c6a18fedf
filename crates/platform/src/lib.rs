//! [`Platform`]: the OCI platform (`os/architecture[/variant]`) an image is chosen for, an op
//! runs on and the engine reports. One type for the solver's cache keys, the registry's choice
//! among an index's manifests and the API's `Platform` scalar; [`PlatformError`] for text that
//! is not one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An OCI platform with Go's architecture names (`amd64`, `arm64`, ...). Serialized as the object
/// `{os, architecture, variant?}` (part of cache keys: keep the shape).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Text that is not `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: want os/architecture[/variant]")]
pub struct PlatformError(pub String);

impl Default for Platform {
    /// `linux/amd64`.
    fn default() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(PlatformError(s.to_owned()));
        }
        match parts.as_slice() {
            [os, arch] => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => Err(PlatformError(s.to_owned())),
        }
    }
}

impl Platform {
    /// The platform this binary was built for (`linux/amd64`, `linux/arm64`, ...), with Go's
    /// architecture names.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Self {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Whether a platform with these fields satisfies this one: same os and architecture, and a
    /// requested variant must match (`arm64` without variant counts as `v8`); without a
    /// requested variant any variant does.
    pub fn accepts(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if os != self.os || architecture != self.architecture {
            return false;
        }
        let normalize = |v: Option<&str>| -> Option<String> {
            match (self.architecture.as_str(), v) {
                ("arm64", None) => Some("v8".to_owned()),
                (_, v) => v.map(str::to_owned),
            }
        };
        match &self.variant {
            None => true,
            Some(wanted) => normalize(Some(wanted)) == normalize(variant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        for text in ["linux/amd64", "linux/arm64/v8", "windows/amd64"] {
            let p: Platform = text.parse().expect(text);
            assert_eq!(p.to_string(), text);
        }
        for bad in ["linux", "linux//v7", "/amd64", "a/b/c/d", ""] {
            let err = bad.parse::<Platform>().expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn host_is_linux_with_go_names() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert!(!host.architecture.contains('_'), "{host}");
    }

    #[test]
    fn variants() {
        let arm64: Platform = "linux/arm64".parse().expect("p");
        let arm64_v8: Platform = "linux/arm64/v8".parse().expect("p");
        assert!(arm64.accepts("linux", "arm64", Some("v8")));
        assert!(arm64_v8.accepts("linux", "arm64", None));
        assert!(!arm64_v8.accepts("linux", "arm64", Some("v9")));
        assert!(!arm64.accepts("linux", "amd64", None));
        assert!(!arm64.accepts("windows", "arm64", None));
    }

    #[test]
    fn serialized_shape_is_stable() {
        let p: Platform = "linux/amd64".parse().expect("p");
        assert_eq!(
            serde_json::to_string(&p).expect("json"),
            r#"{"os":"linux","architecture":"amd64"}"#
        );
    }
}
