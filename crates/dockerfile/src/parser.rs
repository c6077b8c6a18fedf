//! The line level of a Dockerfile, with BuildKit's parser rules: parser directives at the top
//! (`# syntax=`, `# escape=`, `# check=`), comments and empty lines, line continuations with the
//! escape character (comment and empty lines inside a continuation are skipped), the instruction
//! keyword and its `--flags`, and heredoc bodies (`<<EOF`, `<<-EOF`, quoted delimiters, several
//! per line) read after the instruction's line.
//!
//! The result is a list of [`Node`]s: one per instruction, its arguments still text.
//! `instructions` gives them their meaning.

use crate::error::{ParseError, ParseErrorKind};
use crate::shell::{Lex, NoVars};

/// The parser directives found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub syntax: Option<String>,
    pub escape: char,
}

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (quotes removed).
    pub name: String,
    /// The body, every line with its line ending.
    pub content: String,
    /// Whether variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body lines.
    pub chomp: bool,
}

impl Heredoc {
    /// The body, with leading tabs removed from every line when `chomp`.
    pub fn chomped_content(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        chomp(&self.content)
    }
}

/// Leading tabs of every line removed.
pub(crate) fn chomp(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

/// One instruction, its arguments unparsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// The 1-based line the instruction starts on.
    pub line: usize,
    /// The keyword as written.
    pub keyword: String,
    /// `--name[=value]` words before the arguments, quotes and escapes processed.
    pub flags: Vec<String>,
    /// The arguments after the flags, trimmed.
    pub rest: String,
    /// The whole logical line (continuations joined).
    pub original: String,
    pub heredocs: Vec<Heredoc>,
}

/// Recognizes parser directives until the first line that is not one.
struct DirectiveParser {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveParser {
    /// The directive on `line` (already trimmed), if it is one.
    fn check(&mut self, line: &str) -> Result<Option<(String, String)>, ParseErrorKind> {
        if self.done {
            return Ok(None);
        }
        let Some(body) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let Some((key, value)) = split_directive(body.trim_start()) else {
            self.done = true;
            return Ok(None);
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&key) {
            return Err(ParseErrorKind::Directive(format!(
                "only one {key} parser directive can be used"
            )));
        }
        self.seen.push(key.clone());
        Ok(Some((key, value)))
    }
}

/// `name = value` with a name of letters and digits starting with a letter.
fn split_directive(body: &str) -> Option<(String, String)> {
    let (key, value) = body.split_once('=')?;
    let key = key.trim_end();
    let mut chars = key.chars();
    if !chars.next()?.is_ascii_alphabetic() || !chars.all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    Some((key.to_owned(), value.to_owned()))
}

/// The line parser's state: directives, the escape character and the position in the text.
struct LineReader<'a> {
    lines: Vec<&'a str>,
    next: usize,
    directives: DirectiveParser,
    syntax: Option<String>,
    escape: char,
}

impl<'a> LineReader<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        LineReader {
            lines: text.split_inclusive('\n').collect(),
            next: 0,
            directives: DirectiveParser {
                done: false,
                seen: Vec::new(),
            },
            syntax: None,
            escape: '\\',
        }
    }

    /// The next raw line (with its line ending) and its 1-based number.
    fn read(&mut self) -> Option<(&'a str, usize)> {
        let line = self.lines.get(self.next).copied()?;
        self.next += 1;
        Some((line, self.next))
    }

    /// A line without its ending (and leading whitespace when `strip_left`), directives
    /// applied; comments are empty.
    fn process(
        &mut self,
        raw: &str,
        strip_left: bool,
        number: usize,
    ) -> Result<String, ParseError> {
        let mut token = raw.trim_end_matches(['\r', '\n']);
        if strip_left {
            token = token.trim_start();
        }
        let directive = self
            .directives
            .check(token)
            .map_err(|kind| ParseError::new(number, kind))?;
        if let Some((key, value)) = directive {
            self.apply_directive(&key, value)
                .map_err(|kind| ParseError::new(number, kind))?;
        }
        Ok(if is_comment(token) {
            String::new()
        } else {
            token.to_owned()
        })
    }

    fn apply_directive(&mut self, key: &str, value: String) -> Result<(), ParseErrorKind> {
        match key {
            "escape" => {
                self.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(ParseErrorKind::Directive(format!(
                            "invalid escape token {value:?}: want ` or \\"
                        )));
                    }
                }
            }
            "syntax" => self.syntax = Some(value),
            _ => {}
        }
        Ok(())
    }

    /// Removes a trailing escape character (a line continuation); whether the line ends here.
    fn trim_continuation(&self, line: String) -> (String, bool) {
        let trimmed = line.trim_end_matches([' ', '\t']);
        let Some(before) = trimmed.strip_suffix(self.escape) else {
            return (line, true);
        };
        // An escaped escape character does not continue the line.
        if before.ends_with(self.escape) {
            return (line, true);
        }
        (before.to_owned(), false)
    }

    /// The next logical line: its start line and text, continuations joined.
    fn logical_line(&mut self) -> Result<Option<(usize, String)>, ParseError> {
        while let Some((raw, number)) = self.read() {
            let text = self.process(raw, true, number)?;
            let (text, end) = self.trim_continuation(text);
            if end && text.is_empty() {
                continue;
            }
            let mut buf = text;
            let mut end = end;
            while !end {
                let Some((raw, n)) = self.read() else { break };
                let text = self.process(raw, false, n)?;
                if is_comment(raw) || text.trim().is_empty() {
                    continue;
                }
                let (text, e) = self.trim_continuation(text);
                buf.push_str(&text);
                end = e;
            }
            return Ok(Some((number, buf)));
        }
        Ok(None)
    }

    /// Reads the body of `heredoc` up to its delimiter line.
    fn heredoc_body(&mut self, heredoc: &mut Heredoc, start: usize) -> Result<(), ParseError> {
        while let Some((raw, _)) = self.read() {
            let mut candidate = raw.trim_end_matches(['\r', '\n']);
            if heredoc.chomp {
                candidate = candidate.trim_start_matches('\t');
            }
            if candidate == heredoc.name {
                return Ok(());
            }
            heredoc.content.push_str(raw);
        }
        Err(ParseError::new(
            start,
            ParseErrorKind::UnterminatedHeredoc(heredoc.name.clone()),
        ))
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Splits a Dockerfile into its directives and instruction nodes.
pub(crate) fn parse_nodes(text: &str) -> Result<(Directives, Vec<Node>), ParseError> {
    let mut reader = LineReader::new(text);
    let mut nodes = Vec::new();
    while let Some((line, original)) = reader.logical_line()? {
        let mut node = split_command(&original, reader.escape, line)
            .map_err(|kind| ParseError::new(line, kind))?;
        if original.contains("<<") && can_contain_heredoc(&node, reader.escape) {
            let heredocs =
                heredocs_from_line(&original).map_err(|kind| ParseError::new(line, kind))?;
            for mut heredoc in heredocs {
                reader.heredoc_body(&mut heredoc, line)?;
                node.heredocs.push(heredoc);
            }
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(ParseError::new(
            reader.next.max(1),
            ParseErrorKind::NoInstructions,
        ));
    }
    let directives = Directives {
        syntax: reader.syntax,
        escape: reader.escape,
    };
    Ok((directives, nodes))
}

/// Splits a logical line into its keyword, flags and arguments.
pub(crate) fn split_command(
    original: &str,
    escape: char,
    line: usize,
) -> Result<Node, ParseErrorKind> {
    let trimmed = original.trim();
    let (keyword, args) = match trimmed.find(is_separator) {
        Some(at) => (
            &trimmed[..at],
            trimmed[at..].trim_start_matches(is_separator),
        ),
        None => (trimmed, ""),
    };
    let (rest, flags) = extract_flags(args, escape);
    Ok(Node {
        line,
        keyword: keyword.to_owned(),
        flags,
        rest: rest.trim().to_owned(),
        original: original.to_owned(),
        heredocs: Vec::new(),
    })
}

/// The separators of BuildKit's `[\t\v\f\r ]+`.
pub(crate) fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

/// Whether heredocs are read for this instruction: RUN, COPY and ADD (also as an ONBUILD
/// trigger) in their non-JSON form.
fn can_contain_heredoc(node: &Node, escape: char) -> bool {
    let keyword = node.keyword.to_ascii_lowercase();
    if keyword == "onbuild" {
        return match split_command(&node.rest, escape, node.line) {
            Ok(inner) => can_contain_heredoc(&inner, escape),
            Err(_) => false,
        };
    }
    matches!(keyword.as_str(), "run" | "copy" | "add")
        && !matches!(json_array(&node.rest), Ok(Some(_)))
}

/// `rest` as a JSON array of strings: `Ok(None)` when it is no JSON array at all, an error when
/// it is one with other elements than strings.
pub(crate) fn json_array(rest: &str) -> Result<Option<Vec<String>>, ParseErrorKind> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(ParseErrorKind::NotStringArray),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The heredocs a line introduces, in order.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ParseErrorKind> {
    let lex = Lex {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..Lex::new('\\')
    };
    let words = lex.process_words(line, &NoVars).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// A heredoc word (`[n]<<[-]NAME`, NAME possibly quoted), without its body.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, ParseErrorKind> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\u{c}']);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let plain = Lex {
        skip_unset_env: true,
        ..Lex::new('\\')
    };
    let words = plain
        .process_words(rest, &NoVars)
        .map_err(|e| ParseErrorKind::Heredoc(e.to_string()))?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw = Lex {
        raw_quotes: true,
        ..plain
    };
    let raw_words = raw
        .process_words(rest, &NoVars)
        .map_err(|e| ParseErrorKind::Heredoc(e.to_string()))?;
    let [raw_name] = raw_words.as_slice() else {
        return Err(ParseErrorKind::Heredoc(format!(
            "inconsistent lexing of heredoc {rest:?}"
        )));
    };
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        name: name.clone(),
        content: String::new(),
        expand: quotes(name) == quotes(raw_name),
        chomp,
    }))
}

/// The leading `--flag` words of an instruction's arguments (quotes and escapes processed) and
/// the remaining text; a lone `--` ends the flags.
pub(crate) fn extract_flags(line: &str, escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut buf = String::new();
    let mut blank_ok = false;
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if phase == Phase::Spaces {
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            if c != '-' || chars.get(i + 1).map(|(_, n)| *n) != Some('-') {
                return (line[at..].to_owned(), words);
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word if c.is_whitespace() => {
                phase = Phase::Spaces;
                if buf == "--" {
                    return (line[at..].to_owned(), words);
                }
                if blank_ok || !buf.is_empty() {
                    words.push(std::mem::take(&mut buf));
                }
                buf.clear();
                blank_ok = false;
            }
            Phase::Word if c == '\'' || c == '"' => {
                phase = Phase::Quote(c);
                blank_ok = true;
            }
            Phase::Word | Phase::Quote(_) if c == escape => match chars.get(i + 1) {
                Some((_, n)) => {
                    buf.push(*n);
                    i += 1;
                }
                None => phase = Phase::Word,
            },
            Phase::Quote(q) if c == q => phase = Phase::Word,
            _ => buf.push(c),
        }
        i += 1;
    }
    if phase != Phase::Spaces && buf != "--" && (blank_ok || !buf.is_empty()) {
        words.push(buf);
    }
    (String::new(), words)
}

/// Splits at whitespace outside quotes, keeping quotes and escapes in the words (they are
/// processed when the words are expanded), as BuildKit does for ENV, LABEL and ARG.
pub(crate) fn split_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut buf = String::new();
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if !in_word {
            if c.is_whitespace() {
                continue;
            }
            in_word = true;
        }
        match quote {
            None if c.is_whitespace() => {
                if blank_ok || !buf.is_empty() {
                    words.push(std::mem::take(&mut buf));
                }
                blank_ok = false;
                in_word = false;
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    let Some(n) = chars.next() else { continue };
                    buf.push(c);
                    buf.push(n);
                    continue;
                }
                buf.push(c);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    let Some(n) = chars.next() else {
                        quote = None;
                        continue;
                    };
                    buf.push(c);
                    buf.push(n);
                    continue;
                }
                buf.push(c);
            }
        }
    }
    if in_word && (blank_ok || !buf.is_empty()) {
        words.push(buf);
    }
    words
}

/// Splits at BuildKit's whitespace (`[\t\v\f\r ]+`), nothing else special.
pub(crate) fn split_whitespace(rest: &str) -> Vec<String> {
    rest.split(is_separator)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(text: &str) -> Vec<Node> {
        parse_nodes(text).expect("parses").1
    }

    #[test]
    fn continuations_comments_and_empty_lines() {
        let text =
            "# a comment\n\nFROM alpine\nRUN echo a \\\n  # inside\n\n    b\\\n c\n  run  x \n";
        let n = nodes(text);
        assert_eq!(n.len(), 3);
        assert_eq!(n[1].line, 4);
        assert_eq!(n[1].rest, "echo a     b c");
        assert_eq!(n[2].keyword, "run");
        assert_eq!(n[2].rest, "x");
        assert_eq!(n[2].line, 9);
    }

    #[test]
    fn continuation_at_end_of_file_and_escaped_escape() {
        let n = nodes("FROM a\nRUN x \\\\\nRUN y \\");
        assert_eq!(n[1].rest, "x \\\\");
        assert_eq!(n[2].rest, "y");
    }

    #[test]
    fn escape_directive_switches_the_escape_character() {
        let (d, n) =
            parse_nodes("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\nRUN dir c:\\ `\n  x\n")
                .expect("parses");
        assert_eq!(d.escape, '`');
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(n[1].rest, "dir c:\\   x");
    }

    #[test]
    fn directives_only_at_the_top() {
        let (d, _) = parse_nodes("# hello\n# escape=`\nFROM a\n").expect("parses");
        assert_eq!(d.escape, '\\');
        let (d, _) = parse_nodes("\n# escape=`\nFROM a\n").expect("parses");
        assert_eq!(d.escape, '\\');
        let err = parse_nodes("# escape=`\n# escape=\\\nFROM a").expect_err("duplicate");
        assert_eq!(err.line, 2);
        let err = parse_nodes("# escape=x\nFROM a").expect_err("bad escape");
        assert_eq!(err.line, 1);
    }

    #[test]
    fn flags_are_extracted_before_arguments() {
        let n = nodes(
            "COPY --from=build --chown=\"1:1\" --link a b\nRUN -- --not-a-flag\nRUN --x=a\\ b c",
        );
        assert_eq!(n[0].flags, vec!["--from=build", "--chown=1:1", "--link"]);
        assert_eq!(n[0].rest, "a b");
        assert!(n[1].flags.is_empty());
        assert_eq!(n[1].rest, "--not-a-flag");
        assert_eq!(n[2].flags, vec!["--x=a b"]);
        assert_eq!(n[2].rest, "c");
    }

    #[test]
    fn heredoc_words() {
        let cases = [
            ("<<EOF", Some(("EOF", true, false))),
            ("<<-EOF", Some(("EOF", true, true))),
            ("3<<EOF", Some(("EOF", true, false))),
            ("<<'EOF'", Some(("EOF", false, false))),
            ("<<\"EOF\"", Some(("EOF", false, false))),
            ("<<eo'f'", Some(("eof", false, false))),
            ("<<eo\\'f", Some(("eo'f", true, false))),
            ("<<'one two'", Some(("one two", false, false))),
            ("<<$EOF", Some(("$EOF", true, false))),
            ("<<  EOF", Some(("EOF", true, false))),
            ("<<", None),
            ("<<<EOF", None),
            ("\"<<EOF\"", None),
        ];
        for (word, want) in cases {
            let got = parse_heredoc(word).expect(word);
            let got = got.as_ref().map(|h| (h.name.as_str(), h.expand, h.chomp));
            assert_eq!(got, want, "{word}");
        }
    }

    #[test]
    fn heredoc_bodies_follow_the_instruction() {
        let text = "FROM a\nRUN <<EOF\necho hi\nEOF\nCOPY <<A <<B /dir/\na\nA\nb\nB\nRUN <<-X\n\tx\n\tX\nRUN [\"<<EOF\"]\nUSER <<U\n";
        let n = nodes(text);
        assert_eq!(n.len(), 6);
        assert_eq!(n[1].heredocs[0].content, "echo hi\n");
        assert_eq!(n[2].heredocs.len(), 2);
        assert_eq!(n[2].heredocs[1].content, "b\n");
        assert_eq!(n[3].heredocs[0].content, "\tx\n");
        assert_eq!(n[3].heredocs[0].chomped_content(), "x\n");
        assert!(n[4].heredocs.is_empty());
        assert!(n[5].heredocs.is_empty());
        assert_eq!(n[5].line, 14);
    }

    #[test]
    fn unterminated_heredoc_names_the_instruction_line() {
        let err = parse_nodes("FROM a\n\nRUN <<EOF\necho\n").expect_err("unterminated");
        assert_eq!(err.line, 3);
        assert_eq!(
            err.to_string(),
            "dockerfile line 3: unterminated heredoc \"EOF\""
        );
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            split_words("a=\"x y\" b='1 2' c=d\\ e", '\\'),
            vec!["a=\"x y\"", "b='1 2'", "c=d\\ e"]
        );
        assert_eq!(split_words("  ", '\\'), Vec::<String>::new());
        assert_eq!(split_whitespace("a \t b"), vec!["a", "b"]);
    }

    #[test]
    fn json_arrays() {
        assert_eq!(
            json_array(" [\"a\", \"b\"]"),
            Ok(Some(vec!["a".into(), "b".into()]))
        );
        assert_eq!(json_array("[\"a\""), Ok(None));
        assert_eq!(json_array("echo [x]"), Ok(None));
        assert_eq!(json_array("[1]"), Err(ParseErrorKind::NotStringArray));
    }

    #[test]
    fn empty_file_has_no_instructions() {
        let err = parse_nodes("# only a comment\n\n").expect_err("empty");
        assert_eq!(err.kind, ParseErrorKind::NoInstructions);
    }
}
