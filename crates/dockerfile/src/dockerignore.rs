//! `.dockerignore` files, read as BuildKit (moby's `ignorefile`) reads them.

use crate::paths;

/// The exclude patterns of a `.dockerignore` file: a UTF-8 BOM and `#` comment lines dropped,
/// every pattern trimmed and cleaned, a leading `/` removed (patterns are relative to the
/// context), a `!` (re-include) prefix kept.
pub fn parse_dockerignore(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut patterns = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let (invert, pattern) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, pattern),
        };
        let mut pattern = if pattern.is_empty() {
            String::new()
        } else {
            paths::clean(pattern)
        };
        if pattern.len() > 1 && pattern.starts_with('/') {
            pattern.remove(0);
        }
        patterns.push(if invert {
            format!("!{pattern}")
        } else {
            pattern
        });
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_cleaned_and_relative() {
        let text = "\u{feff}# comment\nnode_modules\n\n  /build/  \n!/build/keep.txt\n*.log\n./a/../b\n #not a comment\n/\n";
        assert_eq!(
            parse_dockerignore(text),
            vec![
                "node_modules",
                "build",
                "!build/keep.txt",
                "*.log",
                "b",
                "#not a comment",
                "/"
            ]
        );
    }
}
