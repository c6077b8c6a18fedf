//! Remote sources of ADD: HTTP(S) URLs and git repositories, told apart as BuildKit does (an
//! HTTP(S) URL whose path ends in `.git` is a repository).

/// Whether `src` names a git repository: `git://`, `ssh://`, scp-like `user@host:path`, or an
/// HTTP(S) URL whose path ends with `.git`.
pub(crate) fn is_git_source(src: &str) -> bool {
    if src.starts_with("git://") || src.starts_with("ssh://") || is_scp_like(src) {
        return true;
    }
    match http_path(src) {
        Some(path) => path.ends_with(".git"),
        None => false,
    }
}

/// Whether `src` is an HTTP(S) URL of a file (not a git repository).
pub(crate) fn is_http_source(src: &str) -> bool {
    http_path(src).is_some() && !is_git_source(src)
}

/// `user@host:path`.
fn is_scp_like(src: &str) -> bool {
    let Some((user, rest)) = src.split_once('@') else {
        return false;
    };
    let Some((host, path)) = rest.split_once(':') else {
        return false;
    };
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    word(user) && word(host) && !path.is_empty() && !path.starts_with("//")
}

/// The path of an `http://` or `https://` URL (without query and fragment).
fn http_path(src: &str) -> Option<&str> {
    let rest = src
        .strip_prefix("http://")
        .or_else(|| src.strip_prefix("https://"))?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    Some(rest.find('/').map_or("", |i| &rest[i..]))
}

/// The name a downloaded file gets: the last element of the URL's path (percent-decoded), or
/// `__unnamed__` when the path has none.
pub(crate) fn url_filename(url: &str) -> String {
    let path = http_path(url).unwrap_or_default();
    let decoded = percent_decode(path);
    let base = crate::paths::base(&decoded);
    if base == "." || base == "/" {
        "__unnamed__".to_owned()
    } else {
        base
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_sources() {
        assert!(is_git_source("https://github.com/moby/buildkit.git"));
        assert!(is_git_source(
            "https://github.com/moby/buildkit.git#v0.10.1"
        ));
        assert!(is_git_source("git@github.com:moby/buildkit.git"));
        assert!(is_git_source("git://example.com/repo"));
        assert!(!is_git_source("https://example.com/file.tar.gz"));
        assert!(!is_git_source("local/dir"));
        assert!(is_http_source("https://example.com/file.tar.gz?x=1"));
        assert!(!is_http_source("https://github.com/moby/buildkit.git"));
        assert!(!is_http_source("./https"));
    }

    #[test]
    fn filenames() {
        assert_eq!(url_filename("https://example.com/a/b/file.txt"), "file.txt");
        assert_eq!(url_filename("https://example.com/a/dir/"), "dir");
        assert_eq!(url_filename("https://example.com/a%20b?x=/y"), "a b");
        assert_eq!(url_filename("https://example.com"), "__unnamed__");
        assert_eq!(url_filename("https://example.com/"), "__unnamed__");
    }
}
