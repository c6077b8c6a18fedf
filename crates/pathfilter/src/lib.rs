//! Path rules for trees that are not the host's own root:
//! - [`resolve_in_root`] resolves a path inside a directory as if it were `/` (a snapshot, a
//!   container's rootfs): `..` stops at it, symlinks are followed relative to it.
//! - Include/exclude patterns for tree walks, dockerignore-like: [`PathFilter`] decides for each
//!   path of a walk whether to [`Decision::Take`] it, [`Decision::Descend`] into it only to look
//!   for included entries below, or [`Decision::Skip`] it with everything under it.
//!
//! Patterns are anchored at the walk's root; `*` does not cross `/`, `**` does; a leading `./` or
//! `/` and a trailing `/` are ignored; `.` selects everything; blank lines and `#` comments are
//! ignored. A pattern that matches a directory covers everything under it. Exclude wins over
//! include. With no include pattern everything not excluded is taken.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Why a path could not be resolved inside a root.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error("{path}: {source}")]
    ReadLink {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

const MAX_SYMLINKS: usize = 255;

/// Resolves `path` inside `root` the way the kernel would if `root` were `/`: `..` never leaves
/// the root, absolute symlink targets restart at the root. When `follow_last` is false a final
/// symlink is returned itself. Missing components are fine (the result may not exist).
pub fn resolve_in_root(
    root: &Path,
    path: &str,
    follow_last: bool,
) -> Result<PathBuf, ResolveError> {
    let mut pending: Vec<OsString> = components(Path::new(path));
    pending.reverse();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&comp);
        let is_last = pending.is_empty();
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::SymlinkLoop { path: path.into() });
                }
                let target =
                    std::fs::read_link(&candidate).map_err(|source| ResolveError::ReadLink {
                        path: path.into(),
                        source,
                    })?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved.push(comp),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// The normal and `..` components of a path (`.`, roots and prefixes dropped).
fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// A pattern that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {source}")]
pub struct PatternError {
    pub pattern: String,
    #[source]
    pub source: globset::Error,
}

/// What to do with one path of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Take it (and, for a directory, everything under it that is not excluded).
    Take,
    /// A directory not taken itself, whose entries may be: walk into it, create it only if
    /// something below is taken.
    Descend,
    /// Leave it and everything under it out.
    Skip,
}

/// Compiled include and exclude patterns.
#[derive(Debug, Default, Clone)]
pub struct PathFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    /// With `!` exceptions among the excludes (`.dockerignore`): every exclude pattern in
    /// order, and whether it is an exception. The last pattern matching a path (or one of its
    /// parent directories) decides.
    ordered: Vec<(globset::GlobMatcher, bool)>,
}

impl PathFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, PatternError> {
        let has_exceptions = exclude.iter().any(|p| p.trim().starts_with('!'));
        let mut ordered = Vec::new();
        if has_exceptions {
            for pattern in exclude {
                let trimmed = pattern.trim();
                let (negated, text) = match trimmed.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, trimmed),
                };
                if let Some(glob) = compile(text, pattern)? {
                    ordered.push((glob.compile_matcher(), negated));
                }
            }
        }
        Ok(PathFilter {
            include: build(include)?,
            exclude: if has_exceptions {
                None
            } else {
                build(exclude)?
            },
            ordered,
        })
    }

    /// Whether the filter takes everything (no patterns).
    pub fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none() && self.ordered.is_empty()
    }

    /// Whether the ordered patterns exclude `rel`.
    fn excluded_in_order(&self, rel: &Path) -> bool {
        let mut excluded = false;
        for (matcher, negated) in &self.ordered {
            if rel
                .ancestors()
                .any(|a| !a.as_os_str().is_empty() && matcher.is_match(a))
            {
                excluded = !negated;
            }
        }
        excluded
    }

    /// Decides for `rel` (relative to the walk's root). `parent_taken` says whether its parent
    /// directory was taken (then only excludes apply).
    pub fn decide(&self, rel: &Path, is_dir: bool, parent_taken: bool) -> Decision {
        if self.exclude.as_ref().is_some_and(|set| set.is_match(rel)) {
            return Decision::Skip;
        }
        if !self.ordered.is_empty() && self.excluded_in_order(rel) {
            // An exception may take something below an excluded directory.
            return if is_dir && self.ordered.iter().any(|(_, negated)| *negated) {
                Decision::Descend
            } else {
                Decision::Skip
            };
        }
        if parent_taken {
            return Decision::Take;
        }
        match &self.include {
            None => Decision::Take,
            Some(set) if set.is_match(rel) => Decision::Take,
            Some(_) if is_dir => Decision::Descend,
            Some(_) => Decision::Skip,
        }
    }
}

/// One pattern (`text`, as written in `pattern`) compiled; `None` for blanks and comments.
fn compile(text: &str, pattern: &str) -> Result<Option<globset::Glob>, PatternError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let mut normalized = trimmed;
    while let Some(rest) = normalized.strip_prefix("./") {
        normalized = rest;
    }
    let normalized = normalized.trim_start_matches('/').trim_end_matches('/');
    let normalized = if normalized.is_empty() || normalized == "." {
        "**"
    } else {
        normalized
    };
    GlobBuilder::new(normalized)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(Some)
        .map_err(|source| PatternError {
            pattern: pattern.to_owned(),
            source,
        })
}

fn build(patterns: &[String]) -> Result<Option<GlobSet>, PatternError> {
    let mut builder = GlobSetBuilder::new();
    let mut any = false;
    for pattern in patterns {
        let Some(glob) = compile(pattern, pattern)? else {
            continue;
        };
        builder.add(glob);
        any = true;
    }
    if !any {
        return Ok(None);
    }
    builder.build().map(Some).map_err(|source| PatternError {
        pattern: patterns.join(", "),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(include: &[&str], exclude: &[&str]) -> PathFilter {
        let s = |v: &[&str]| v.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        PathFilter::new(&s(include), &s(exclude)).expect("patterns")
    }

    #[test]
    fn no_patterns_take_everything() {
        let p = f(&[], &[]);
        assert!(p.is_empty());
        assert_eq!(p.decide(Path::new("a/b"), false, false), Decision::Take);
    }

    #[test]
    fn exclude_wins_and_prunes_directories() {
        let p = f(&["**"], &["node_modules", "*.log"]);
        assert_eq!(
            p.decide(Path::new("node_modules"), true, false),
            Decision::Skip
        );
        assert_eq!(p.decide(Path::new("x.log"), false, false), Decision::Skip);
        // `*` does not cross `/`.
        assert_eq!(p.decide(Path::new("d/x.log"), false, true), Decision::Take);
        assert_eq!(p.decide(Path::new("src"), true, false), Decision::Take);
    }

    #[test]
    fn include_directory_covers_its_tree() {
        let p = f(&["./src/", "*.md"], &[]);
        assert_eq!(p.decide(Path::new("src"), true, false), Decision::Take);
        assert_eq!(
            p.decide(Path::new("src/deep/file"), false, true),
            Decision::Take
        );
        assert_eq!(p.decide(Path::new("docs"), true, false), Decision::Descend);
        assert_eq!(
            p.decide(Path::new("README.md"), false, false),
            Decision::Take
        );
        assert_eq!(p.decide(Path::new("main.rs"), false, false), Decision::Skip);
        assert_eq!(p.decide(Path::new("a/**/b"), false, false), Decision::Skip);
        let deep = f(&["**/*.rs"], &[]);
        assert_eq!(
            deep.decide(Path::new("a/b/c.rs"), false, false),
            Decision::Take
        );
    }

    #[test]
    fn exceptions_re_include_in_order() {
        let p = f(
            &[],
            &[
                "docs",
                "!docs/keep.md",
                "*.log",
                "!important.log",
                "important.log",
            ],
        );
        assert_eq!(p.decide(Path::new("docs"), true, false), Decision::Descend);
        assert_eq!(
            p.decide(Path::new("docs/a.md"), false, false),
            Decision::Skip
        );
        assert_eq!(
            p.decide(Path::new("docs/keep.md"), false, false),
            Decision::Take
        );
        assert_eq!(p.decide(Path::new("x.log"), false, false), Decision::Skip);
        // The last matching pattern wins.
        assert_eq!(
            p.decide(Path::new("important.log"), false, false),
            Decision::Skip
        );
        assert_eq!(
            p.decide(Path::new("src/main.rs"), false, true),
            Decision::Take
        );
    }

    #[test]
    fn bad_pattern_is_named() {
        let err = PathFilter::new(&["a[".to_owned()], &[]).expect_err("invalid");
        assert!(err.to_string().contains("\"a[\""), "{err}");
    }
}
