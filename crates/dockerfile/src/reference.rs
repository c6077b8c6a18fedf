//! Whether a name can be an image reference (the Docker distribution grammar:
//! `[domain[:port]/]path[:tag][@algorithm:hex]`, path components lowercase), used to tell
//! images from mistyped stage names in `FROM` and `COPY --from`.

/// Whether `reference` parses as a (not yet normalized) image reference.
pub(crate) fn is_valid_reference(reference: &str) -> bool {
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if digest.is_some_and(|d| !is_valid_digest(d)) {
        return false;
    }
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if tag.is_some_and(|t| !is_valid_tag(t)) || name.is_empty() || name.len() > 255 {
        return false;
    }
    let (domain, path) = split_domain(name);
    if domain.is_some_and(|d| !is_valid_domain(d)) {
        return false;
    }
    if path.len() == 64 && path.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    path.split('/').all(is_valid_path_component)
}

/// The first component is a registry host when it looks like one (has `.` or `:`, is
/// `localhost`, or has uppercase letters) and more components follow.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn is_valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) => {
                if !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                    return false;
                }
                return rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port);
            }
            None => return false,
        },
        None => match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        },
    };
    port.is_none_or(is_port) && host.split('.').all(is_domain_component)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
}

fn is_domain_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !c.starts_with('-')
        && !c.ends_with('-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_valid_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            while i < bytes.len() && alnum(bytes[i]) {
                i += 1;
            }
            expect_alnum = false;
            continue;
        }
        if expect_alnum {
            return false;
        }
        let sep_len = match bytes[i] {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|b| **b == b'-').count(),
            _ => return false,
        };
        i += sep_len;
        expect_alnum = true;
    }
    !bytes.is_empty() && !expect_alnum
}

/// `[\w][\w.-]{0,127}`.
fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|b| word(*b) || *b == b'.' || *b == b'-')
}

/// `algorithm:hex` with at least 32 hex digits.
fn is_valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    !algorithm.is_empty()
        && algorithm.starts_with(|c: char| c.is_ascii_alphabetic())
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b))
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let digest = format!("alpine@sha256:{}", "a".repeat(64));
        for ok in [
            "alpine",
            "alpine:3.19",
            "library/alpine",
            "docker.io/library/alpine:latest",
            "localhost:5000/my-app_x.y__z:v1.0-rc",
            "localhost/app",
            "ghcr.io/org/team/app:sha-abc",
            "[::1]:5000/app",
            digest.as_str(),
        ] {
            assert!(is_valid_reference(ok), "{ok}");
        }
        let hex = "a".repeat(64);
        for bad in [
            "",
            "Alpine",
            "build stage",
            "app:",
            "a//b",
            "-app",
            "app-",
            "app@sha256:short",
            "app:t@g",
            hex.as_str(),
            "foo$bar",
        ] {
            assert!(!is_valid_reference(bad), "{bad}");
        }
    }
}
