//! Image references (`docker.io/library/busybox:latest`, `busybox`, `127.0.0.1:5000/x/y:tag`,
//! `name@sha256:...`) with Docker's normalization rules.

use std::fmt;
use std::str::FromStr;

use dagr_snapshot::Digest;

/// The registry a reference without a domain belongs to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves the Docker Hub registry API.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Why an image reference could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error("image reference {reference:?}: invalid repository path component {component:?}")]
    InvalidComponent {
        reference: String,
        component: String,
    },
    #[error("image reference {reference:?}: invalid registry host {host:?}")]
    InvalidHost { reference: String, host: String },
    #[error("image reference {reference:?}: invalid tag {tag:?}")]
    InvalidTag { reference: String, tag: String },
    #[error("image reference {reference:?}: invalid digest {digest:?}")]
    InvalidDigest { reference: String, digest: String },
    #[error("image reference {reference:?}: repository name longer than {MAX_NAME_LEN} characters")]
    NameTooLong { reference: String },
}

/// A normalized image reference: registry host, repository path, and a tag and/or digest.
///
/// Parsing follows Docker: a first path component is a registry host only when it contains `.` or
/// `:`, is `localhost`, or has upper-case letters; otherwise the registry is `docker.io`, where
/// single-component names get the `library/` prefix. A reference without tag and digest gets the
/// tag `latest`. `index.docker.io` is normalized to `docker.io`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalizes `input`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let err_ref = || input.to_string();

        let (rest, digest) = match input.split_once('@') {
            Some((name, digest)) => {
                let parsed = parse_digest(digest).ok_or_else(|| ReferenceError::InvalidDigest {
                    reference: err_ref(),
                    digest: digest.to_string(),
                })?;
                (name, Some(parsed))
            }
            None => (input, None),
        };

        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                (&rest[..colon], Some(rest[colon + 1..].to_string()))
            }
            _ => (rest, None),
        };
        if let Some(tag) = &tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::InvalidTag {
                reference: err_ref(),
                tag: tag.clone(),
            });
        }

        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder)) if is_domain(first) => {
                if !valid_host(first) {
                    return Err(ReferenceError::InvalidHost {
                        reference: err_ref(),
                        host: first.to_string(),
                    });
                }
                let registry = if first == "index.docker.io" {
                    DOCKER_HUB.to_string()
                } else {
                    first.to_string()
                };
                (registry, remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong {
                reference: err_ref(),
            });
        }
        for component in repository.split('/') {
            if !valid_component(component) {
                return Err(ReferenceError::InvalidComponent {
                    reference: err_ref(),
                    component: component.to_string(),
                });
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(DEFAULT_TAG.to_string())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host as named (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host that serves the registry API (`registry-1.docker.io` for `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.registry
        }
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned, else the tag.
    pub fn manifest_key(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::InvalidTag {
                reference: self.to_string(),
                tag: tag.to_string(),
            });
        }
        Ok(Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The same repository pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: self.tag.clone(),
            digest: Some(digest),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn parse_digest(text: &str) -> Option<Digest> {
    Digest::from_str(text).ok()
}

fn is_domain(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        // [ipv6]:port or [ipv6]
        let Some((addr, after)) = inner.split_once(']') else {
            return false;
        };
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return port_ok && addr.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // a separator run: ".", "_", "__", or any number of "-"
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_go_to_docker_hub_library() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn full_docker_hub_names_are_kept() {
        let r = Reference::parse("docker.io/library/busybox:latest").unwrap();
        assert_eq!(r, Reference::parse("busybox:latest").unwrap());
        let r = Reference::parse("index.docker.io/foo/bar:1.0").unwrap();
        assert_eq!(r.to_string(), "docker.io/foo/bar:1.0");
        let r = Reference::parse("foo/bar").unwrap();
        assert_eq!(r.to_string(), "docker.io/foo/bar:latest");
    }

    #[test]
    fn hosts_with_ports_and_nested_paths() {
        let r = Reference::parse("127.0.0.1:5000/x/y:tag").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "x/y");
        assert_eq!(r.tag(), Some("tag"));
        let r = Reference::parse("localhost/x").unwrap();
        assert_eq!(r.registry(), "localhost");
        assert_eq!(r.repository(), "x");
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(r.tag(), Some("latest"));
        let r = Reference::parse("[::1]:5000/x:v1").unwrap();
        assert_eq!(r.registry(), "[::1]:5000");
    }

    #[test]
    fn digests_pin_without_default_tag() {
        let r = Reference::parse(&format!("busybox@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), format!("sha256:{HEX}"));
        assert_eq!(r.manifest_key(), format!("sha256:{HEX}"));
        let r = Reference::parse(&format!("127.0.0.1:5000/a:v1@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_key(), format!("sha256:{HEX}"));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/a:v1@sha256:{HEX}"));
    }

    #[test]
    fn invalid_references_are_refused() {
        assert_eq!(Reference::parse(""), Err(ReferenceError::Empty));
        assert!(matches!(
            Reference::parse("Busybox"),
            Err(ReferenceError::InvalidComponent { .. })
        ));
        assert!(matches!(
            Reference::parse("busybox:-bad"),
            Err(ReferenceError::InvalidTag { .. })
        ));
        assert!(matches!(
            Reference::parse("busybox@sha256:abc"),
            Err(ReferenceError::InvalidDigest { .. })
        ));
        assert!(matches!(
            Reference::parse("a//b"),
            Err(ReferenceError::InvalidComponent { .. })
        ));
        assert!(matches!(
            Reference::parse("host:port/x"),
            Err(ReferenceError::InvalidHost { .. })
        ));
        assert!(Reference::parse("a__b/c-d--e/f.g_h:v1.2-3").is_ok());
        assert!(Reference::parse("a___b").is_err());
        assert!(Reference::parse("a..b").is_err());
    }

    #[test]
    fn with_tag_replaces_tag_and_drops_digest() {
        let r = Reference::parse(&format!("x.io/a@sha256:{HEX}")).unwrap();
        let t = r.with_tag("v2").unwrap();
        assert_eq!(t.to_string(), "x.io/a:v2");
        assert!(r.with_tag("bad tag").is_err());
    }
}
