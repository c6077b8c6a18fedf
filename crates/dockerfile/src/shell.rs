//! Shell-like processing of Dockerfile words with BuildKit's `shell.Lex` rules: quotes (removed;
//! nothing is expanded inside single quotes), the escape character, `$VAR` and `${VAR}` and the
//! modifiers `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`,
//! `${VAR?msg}`, `${VAR#pat}`, `${VAR##pat}`, `${VAR%pat}`, `${VAR%%pat}`, `${VAR/pat/repl}` and
//! `${VAR//pat/repl}`. Unknown variables expand to nothing (unless [`Lex::skip_unset_env`]).
//! [`Lex::process_words`] also splits the result into words: expanded values are split at
//! whitespace, quoted text is not.

/// Variables a word is expanded with.
pub trait Vars {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<&str>;
}

/// No variables at all.
pub struct NoVars;

impl Vars for NoVars {
    fn var(&self, _: &str) -> Option<&str> {
        None
    }
}

/// An ordered environment: names are unique, setting an existing name replaces its value in
/// place (as an image config's `Env` list and BuildKit's build state do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList {
    entries: Vec<(String, String)>,
}

impl EnvList {
    pub fn new() -> Self {
        Self::default()
    }

    /// From `NAME=value` strings (a missing `=` is an empty value).
    pub fn from_strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Self {
        let mut env = EnvList::new();
        for item in items {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            env.set(k, v);
        }
        env
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: &str, value: &str) {
        match self.entries.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => value.clone_into(v),
            None => self.entries.push((name.to_owned(), value.to_owned())),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// As `NAME=value` strings, in order.
    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

impl Vars for EnvList {
    fn var(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

/// A word that could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("substitutions nested too deeply")]
    TooDeep,
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    Pattern { pattern: String, reason: String },
}

/// The word processor, with BuildKit's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lex {
    /// The escape character (`\` or the one of the `escape` directive).
    pub escape: char,
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
}

impl Lex {
    pub fn new(escape: char) -> Self {
        Lex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// `word` with quotes and escapes processed and variables expanded, as one string.
    pub fn process_word(&self, word: &str, vars: &dyn Vars) -> Result<String, ShellError> {
        let mut scanner = Scanner::new(*self, word, vars);
        let (result, _) = scanner.process_until(None, self.raw_escapes)?;
        Ok(result)
    }

    /// `word` processed like [`Lex::process_word`] and split into words.
    pub fn process_words(&self, word: &str, vars: &dyn Vars) -> Result<Vec<String>, ShellError> {
        let mut scanner = Scanner::new(*self, word, vars);
        let (_, words) = scanner.process_until(None, self.raw_escapes)?;
        Ok(words.finish())
    }
}

/// Words being split: whitespace ends a word unless it was quoted or escaped.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct Scanner<'a> {
    lex: Lex,
    chars: Vec<char>,
    pos: usize,
    vars: &'a dyn Vars,
    /// How many `${` the scanner is inside.
    depth: usize,
}

/// How deeply `${...}` may nest (the scanner recurses for each level).
const MAX_NESTING: usize = 64;

impl<'a> Scanner<'a> {
    fn new(lex: Lex, word: &str, vars: &'a dyn Vars) -> Self {
        Scanner {
            lex,
            chars: word.chars().collect(),
            pos: 0,
            vars,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// Processes up to `stop` (consumed) or the end; reaching the end while looking for `stop`
    /// is an error.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Words), ShellError> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lex.skip_process_quotes;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok((result, words));
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    words.add_string(&value);
                    result.push_str(&value);
                }
                '<' => {
                    let value = self.possible_heredoc();
                    words.add_raw_string(&value);
                    result.push_str(&value);
                }
                '\'' if quotes => {
                    let value = self.single_quote()?;
                    words.add_raw_string(&value);
                    result.push_str(&value);
                }
                '"' if quotes => {
                    let value = self.double_quote()?;
                    words.add_raw_string(&value);
                    result.push_str(&value);
                }
                _ => {
                    self.next();
                    if c == self.lex.escape {
                        if raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        match stop {
            None => Ok((result, words)),
            Some('\'') => Err(ShellError::Unterminated("single-quote")),
            Some('"') => Err(ShellError::Unterminated("double-quote")),
            Some('}') => Err(ShellError::Unterminated("}")),
            Some(_) => Err(ShellError::Unterminated("/")),
        }
    }

    fn possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.next();
        let mut out = "<<".to_owned();
        while let Some(c @ (' ' | '\t' | '\r')) = self.peek() {
            out.push(c);
            self.next();
        }
        out
    }

    fn single_quote(&mut self) -> Result<String, ShellError> {
        let mut out = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ShellError::Unterminated("single-quote")),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ShellError> {
        let mut out = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ShellError::Unterminated("double-quote")),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.next();
                    if c != self.lex.escape {
                        out.push(c);
                        continue;
                    }
                    match self.peek() {
                        // An escape at the very end: the missing quote is reported next.
                        None => {}
                        Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                            if self.lex.raw_escapes {
                                out.push(c);
                            }
                            self.next();
                            out.push(n);
                        }
                        // Other escapes stay as written inside double quotes.
                        Some(_) => out.push(c),
                    }
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return c.to_string();
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            name.push(c);
            self.next();
        }
        name
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.vars.var(name).map(str::to_owned)
    }

    fn dollar(&mut self) -> Result<String, ShellError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ShellError::TooDeep);
        }
        let value = self.braced();
        self.depth -= 1;
        value
    }

    /// The `${...}` forms, after the brace.
    fn braced(&mut self) -> Result<String, ShellError> {
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        match self.next() {
            None => Err(ShellError::MissingBrace),
            Some('}') => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') => match self.next() {
                None => Err(ShellError::MissingBrace),
                Some(m) => self.modifier(&name, m, true),
            },
            Some(m @ ('+' | '-' | '?' | '#' | '%')) => self.modifier(&name, m, false),
            Some('/') => self.replace(&name),
            Some(other) => Err(ShellError::UnsupportedModifier(other.to_string())),
        }
    }

    /// The word of a `${name<modifier>word}` up to the closing brace.
    fn modifier_word(&mut self, raw_escapes: bool) -> Result<String, ShellError> {
        match self.process_until(Some('}'), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.at_end() => Err(ShellError::MissingBrace),
            Err(e) => Err(e),
        }
    }

    fn modifier(&mut self, name: &str, m: char, null_is_unset: bool) -> Result<String, ShellError> {
        let shown = if null_is_unset {
            format!(":{m}")
        } else {
            m.to_string()
        };
        let pattern = m == '#' || m == '%';
        if null_is_unset && pattern {
            return Err(ShellError::UnsupportedModifier(shown));
        }
        let word = self.modifier_word(pattern)?;
        let value = self.lookup(name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{shown}{word}}}"));
        }
        let unset = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
        match m {
            '-' if unset => Ok(word),
            '-' => Ok(value.unwrap_or_default()),
            '+' if unset => Ok(String::new()),
            '+' => Ok(word),
            '?' => match value {
                None => Err(required(name, word, "is not allowed to be unset")),
                Some(v) if null_is_unset && v.is_empty() => {
                    Err(required(name, word, "is not allowed to be empty"))
                }
                Some(v) => Ok(v),
            },
            '#' | '%' => {
                let (greedy, pat) = match word.strip_prefix(m) {
                    Some(rest) => (true, rest.to_owned()),
                    None => (false, word),
                };
                let value = value.unwrap_or_default();
                let tokens = compile_pattern(&pat)?;
                Ok(if m == '#' {
                    trim_prefix(&tokens, &value, greedy)
                } else {
                    trim_suffix(&tokens, &value, greedy)
                })
            }
            _ => Err(ShellError::UnsupportedModifier(shown)),
        }
    }

    fn replace(&mut self, name: &str) -> Result<String, ShellError> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = match self.process_until(Some('/'), true) {
            Ok((p, _)) => p,
            Err(_) if self.at_end() => return Err(ShellError::MissingSlash),
            Err(e) => return Err(e),
        };
        let replacement = self.modifier_word(true)?;
        let value = self.lookup(name);
        let Some(value) = value else {
            if self.lex.skip_unset_env {
                let slashes = if all { "//" } else { "/" };
                return Ok(format!("${{{name}{slashes}{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let tokens = compile_pattern(&pattern)?;
        let replacement = unescape(&replacement);
        Ok(replace_matches(&tokens, &value, &replacement, all))
    }
}

fn required(name: &str, word: String, default: &str) -> ShellError {
    ShellError::Required {
        name: name.to_owned(),
        message: if word.is_empty() {
            default.to_owned()
        } else {
            word
        },
    }
}

/// `\c` as `c`.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            _ => out.push(c),
        }
    }
    out
}

/// One element of a shell pattern: `*`, `?` or a literal character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

/// A shell pattern (`*`, `?`, `\` escapes; no bracket expressions, as in BuildKit).
fn compile_pattern(pattern: &str) -> Result<Vec<Tok>, ShellError> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' => match chars.next() {
                // `}` and `/` are escaped for the `${}` syntax, not for the pattern.
                Some(n @ ('}' | '/' | '*' | '?' | '\\')) => out.push(Tok::Lit(n)),
                other => {
                    return Err(ShellError::Pattern {
                        pattern: pattern.to_owned(),
                        reason: format!("invalid escape '\\{}'", other.unwrap_or(' ')),
                    });
                }
            },
            _ => out.push(Tok::Lit(c)),
        }
    }
    Ok(out)
}

/// For every prefix length `e` of `s`, whether `tokens` match `s[..e]` (an NFA simulation:
/// linear in `s` times the pattern length, whatever the stars).
fn match_ends(tokens: &[Tok], s: &[char]) -> Vec<bool> {
    let m = tokens.len();
    let close = |states: &mut Vec<bool>| {
        for i in 0..m {
            if states[i] && tokens[i] == Tok::Star {
                states[i + 1] = true;
            }
        }
    };
    let mut states = vec![false; m + 1];
    states[0] = true;
    close(&mut states);
    let mut ends = Vec::with_capacity(s.len() + 1);
    ends.push(states[m]);
    for &c in s {
        let mut next = vec![false; m + 1];
        for i in (0..m).filter(|i| states[*i]) {
            match tokens[i] {
                Tok::Star => next[i] = true,
                Tok::Any => next[i + 1] = true,
                Tok::Lit(l) if l == c => next[i + 1] = true,
                Tok::Lit(_) => {}
            }
        }
        close(&mut next);
        states = next;
        ends.push(states[m]);
    }
    ends
}

/// The matched length: the shortest, or the longest when `greedy`.
fn pick(ends: &[bool], greedy: bool) -> Option<usize> {
    let mut matched = (0..ends.len()).filter(|e| ends[*e]);
    if greedy {
        matched.next_back()
    } else {
        matched.next()
    }
}

fn trim_prefix(tokens: &[Tok], value: &str, greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    match pick(&match_ends(tokens, &chars), greedy) {
        Some(len) => chars[len..].iter().collect(),
        None => value.to_owned(),
    }
}

fn trim_suffix(tokens: &[Tok], value: &str, greedy: bool) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    chars.reverse();
    let reversed: Vec<Tok> = tokens.iter().rev().copied().collect();
    match pick(&match_ends(&reversed, &chars), greedy) {
        Some(len) => chars[len..].iter().rev().collect(),
        None => value.to_owned(),
    }
}

/// The longest match of `tokens` starting at `start`, as its end.
fn longest_match_at(tokens: &[Tok], chars: &[char], start: usize) -> Option<usize> {
    pick(&match_ends(tokens, &chars[start..]), true).map(|len| start + len)
}

fn replace_matches(tokens: &[Tok], value: &str, replacement: &str, all: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut at = 0;
    while at <= chars.len() {
        match longest_match_at(tokens, &chars, at) {
            Some(end) => {
                out.push_str(replacement);
                if !all {
                    out.extend(&chars[end..]);
                    return out;
                }
                if end == at {
                    out.extend(chars.get(at));
                    at += 1;
                } else {
                    at = end;
                }
            }
            None => {
                out.extend(chars.get(at));
                at += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvList {
        EnvList::from_strings([
            "PWD=/home",
            "SHELL=bash",
            "KOREAN=한국어",
            "EMPTY=",
            "FILE=archive.tar.gz",
            "SPACED=a b  c",
        ])
    }

    fn word(input: &str) -> Result<String, ShellError> {
        Lex::new('\\').process_word(input, &env())
    }

    #[test]
    fn expansion_table() {
        for (input, want) in [
            ("hello", "hello"),
            ("he'll'o", "hello"),
            ("he\"ll\"o", "hello"),
            ("he\\'llo", "he'llo"),
            ("'$PWD'", "$PWD"),
            ("\"$PWD\"", "/home"),
            ("$PWD/x", "/home/x"),
            ("${PWD}x", "/homex"),
            ("\\$PWD", "$PWD"),
            ("$UNSET", ""),
            ("${UNSET}", ""),
            ("${UNSET:-default}", "default"),
            ("${UNSET-default}", "default"),
            ("${EMPTY:-default}", "default"),
            ("${EMPTY-default}", ""),
            ("${SHELL:-default}", "bash"),
            ("${SHELL:+alt}", "alt"),
            ("${SHELL+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET:+alt}", ""),
            ("${UNSET:-$SHELL}", "bash"),
            ("${UNSET:-'q $x'}", "q $x"),
            ("${KOREAN}", "한국어"),
            ("${FILE#*.}", "tar.gz"),
            ("${FILE##*.}", "gz"),
            ("${FILE%.*}", "archive.tar"),
            ("${FILE%%.*}", "archive"),
            ("${FILE/a/A}", "Archive.tar.gz"),
            ("${FILE//a/A}", "Archive.tAr.gz"),
            ("${FILE/.t*/}", "archive"),
            ("$", "$"),
            ("a$", "a$"),
            ("\"a\\\"b\"", "a\"b"),
            ("\"a\\nb\"", "a\\nb"),
            ("$SPACED", "a b  c"),
        ] {
            assert_eq!(word(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn required_and_bad_syntax() {
        assert_eq!(
            word("${UNSET:?must be set}").map_err(|e| e.to_string()),
            Err("UNSET: must be set".to_owned())
        );
        assert_eq!(
            word("${EMPTY:?}").map_err(|e| e.to_string()),
            Err("EMPTY: is not allowed to be empty".to_owned())
        );
        assert_eq!(word("${EMPTY?}"), Ok(String::new()));
        assert_eq!(word("${UNSET"), Err(ShellError::MissingBrace));
        assert_eq!(word("${}"), Err(ShellError::BadSubstitution));
        assert_eq!(
            word("${SHELL:=x}"),
            Err(ShellError::UnsupportedModifier(":=".into()))
        );
        assert_eq!(
            word("${SHELL:#x}"),
            Err(ShellError::UnsupportedModifier(":#".into()))
        );
        assert_eq!(word("'open"), Err(ShellError::Unterminated("single-quote")));
        assert_eq!(
            word("\"open"),
            Err(ShellError::Unterminated("double-quote"))
        );
    }

    #[test]
    fn deep_nesting_and_many_stars_are_bounded() {
        let deep = format!("{}x{}", "${A:-".repeat(100), "}".repeat(100));
        assert_eq!(word(&deep), Err(ShellError::TooDeep));
        let nested = format!("{}x{}", "${A:-".repeat(10), "}".repeat(10));
        assert_eq!(word(&nested), Ok("x".to_owned()));
        let mut env = env();
        env.set("LONG", &"a".repeat(2000));
        let pattern = format!("${{LONG#{}b}}", "*a".repeat(30));
        let long = "a".repeat(2000);
        assert_eq!(Lex::new('\\').process_word(&pattern, &env), Ok(long));
    }

    #[test]
    fn backtick_escape() {
        let lex = Lex::new('`');
        assert_eq!(lex.process_word("a`$PWD\\x", &env()), Ok("a$PWD\\x".into()));
    }

    #[test]
    fn words_split_expanded_values_but_not_quotes() {
        let lex = Lex::new('\\');
        assert_eq!(
            lex.process_words("x $SPACED \"q r\" 'y z'", &env()),
            Ok(vec![
                "x".to_owned(),
                "a".into(),
                "b".into(),
                "c".into(),
                "q r".into(),
                "y z".into()
            ])
        );
        assert_eq!(
            lex.process_words("80 ${UNSET:-443}/tcp", &env()),
            Ok(vec!["80".to_owned(), "443/tcp".into()])
        );
        assert_eq!(
            lex.process_words("a\\ b", &env()),
            Ok(vec!["a b".to_owned()])
        );
    }

    #[test]
    fn raw_modes_and_unset_kept() {
        let lex = Lex {
            raw_quotes: true,
            raw_escapes: true,
            skip_unset_env: true,
            ..Lex::new('\\')
        };
        assert_eq!(
            lex.process_words("RUN <<'EOF' \"$X\" \\a ${Y:-z}", &NoVars),
            Ok(vec![
                "RUN".to_owned(),
                "<<'EOF'".into(),
                "\"$X\"".into(),
                "\\a".into(),
                "${Y:-z}".into()
            ])
        );
        let quotes_kept = Lex {
            skip_process_quotes: true,
            ..Lex::new('\\')
        };
        assert_eq!(
            quotes_kept.process_word("'$PWD' \"x\"", &env()),
            Ok("'/home' \"x\"".into())
        );
    }

    #[test]
    fn env_list_replaces_in_place() {
        let mut env = EnvList::from_strings(["A=1", "B=2"]);
        env.set("A", "3");
        env.set("C", "4");
        assert_eq!(env.to_strings(), vec!["A=3", "B=2", "C=4"]);
        assert_eq!(env.get("B"), Some("2"));
        assert_eq!(env.get("b"), None);
    }
}
