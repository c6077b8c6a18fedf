//! Lexical path helpers with Go's `path` package rules (`Clean`, `Join`, `Base`), which BuildKit
//! applies to Dockerfile paths, and BuildKit's `NormalizePath` for workdirs and copy paths.

/// Go's `path.Clean`: the shortest equivalent path, purely lexically.
pub(crate) fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `path.Join`: the non-empty elements joined with `/` and cleaned; "" when all are empty.
pub(crate) fn join(elems: &[&str]) -> String {
    let kept: Vec<&str> = elems.iter().copied().filter(|e| !e.is_empty()).collect();
    if kept.is_empty() {
        return String::new();
    }
    clean(&kept.join("/"))
}

/// Go's `path.Base`: the last element, trailing slashes ignored.
pub(crate) fn base(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_owned();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_owned()
}

/// BuildKit's `NormalizePath` for Unix paths: `path` joined to `parent` when relative (and then
/// cleaned; an absolute path is kept as written), optionally keeping a trailing `/` (or `/.`).
pub(crate) fn normalize(parent: &str, path: &str, keep_slash: bool) -> String {
    let parent = if parent.is_empty() { "/" } else { parent };
    let parent = if parent.starts_with('/') {
        parent.to_owned()
    } else {
        join(&["/", parent])
    };
    let mut out = if path.is_empty() {
        parent.clone()
    } else if path.starts_with('/') {
        path.to_owned()
    } else {
        join(&[&parent, path])
    };
    if keep_slash {
        if path.ends_with('/') && !out.ends_with('/') {
            out.push('/');
        } else if path.ends_with("/.") {
            if out != "/" {
                out.push('/');
            }
            out.push('.');
        }
    }
    out
}

/// A destination of COPY/ADD: relative to the working directory, a trailing `/` kept (`.` is
/// the working directory itself, as a directory).
pub(crate) fn relative_to_workdir(workdir: &str, dest: &str) -> String {
    if dest.starts_with('/') {
        return normalize("/", dest, true);
    }
    let dest = if dest.is_empty() || dest == "." {
        "./"
    } else {
        dest
    };
    normalize(workdir, dest, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("/", "/"),
            ("a/b/../c", "a/c"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/./b/", "a/b"),
            ("//a//b", "/a/b"),
            ("a/..", "."),
        ] {
            assert_eq!(clean(input), want, "{input}");
        }
    }

    #[test]
    fn join_and_base() {
        assert_eq!(join(&["/", "app", "../x"]), "/x");
        assert_eq!(join(&["", ""]), "");
        assert_eq!(base("/a/b/"), "b");
        assert_eq!(base("/"), "/");
        assert_eq!(base(""), ".");
        assert_eq!(base("file"), "file");
    }

    #[test]
    fn normalize_keeps_absolute_paths_and_trailing_slashes() {
        assert_eq!(normalize("/app", "sub", false), "/app/sub");
        assert_eq!(normalize("/app", "/abs/", false), "/abs/");
        assert_eq!(normalize("", "x", false), "/x");
        assert_eq!(normalize("/app", "sub/", true), "/app/sub/");
        assert_eq!(normalize("/", "./", true), "/");
        assert_eq!(relative_to_workdir("/app", "."), "/app/");
        assert_eq!(relative_to_workdir("/app", "x"), "/app/x");
        assert_eq!(relative_to_workdir("/app", "/x/"), "/x/");
        assert_eq!(relative_to_workdir("/", "."), "/");
    }
}
