//! The executable-document AST (the shape of graphql-parser's query AST, without its generics)
//! and its parser. graphql-parser caps nesting at 50 brackets, which Dagger SDK queries (one level
//! per chained call) exceed; this parser is bounded by [`crate::Limits::max_depth`] instead.

use std::collections::BTreeMap;
use std::fmt;

use crate::types::TypeRef;

/// Errors parsing a query document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text is not a valid executable document.
    #[error("syntax error at {line}:{column}: {message}")]
    Syntax {
        /// What went wrong.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
    },
}

impl ParseError {
    pub(crate) fn pos(&self) -> Pos {
        match self {
            ParseError::Syntax { line, column, .. } => Pos {
                line: *line,
                column: *column,
            },
        }
    }
}

/// A position in the document (1-based line and column).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column (characters), from 1.
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Document {
    pub definitions: Vec<Definition>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Definition {
    Operation(OperationDefinition),
    Fragment(FragmentDefinition),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FragmentDefinition {
    pub position: Pos,
    pub name: String,
    pub type_condition: TypeCondition,
    pub directives: Vec<Directive>,
    pub selection_set: SelectionSet,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OperationDefinition {
    SelectionSet(SelectionSet),
    Query(Operation),
    Mutation(Operation),
    Subscription(Operation),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Operation {
    pub position: Pos,
    pub name: Option<String>,
    pub variable_definitions: Vec<VariableDefinition>,
    pub directives: Vec<Directive>,
    pub selection_set: SelectionSet,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SelectionSet {
    pub span: (Pos, Pos),
    pub items: Vec<Selection>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VariableDefinition {
    pub position: Pos,
    pub name: String,
    pub var_type: TypeRef,
    pub default_value: Option<Value>,
    pub directives: Vec<Directive>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Selection {
    Field(Field),
    FragmentSpread(FragmentSpread),
    InlineFragment(InlineFragment),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    pub position: Pos,
    pub alias: Option<String>,
    pub name: String,
    pub arguments: Vec<(String, Value)>,
    pub directives: Vec<Directive>,
    pub selection_set: SelectionSet,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FragmentSpread {
    pub position: Pos,
    pub fragment_name: String,
    pub directives: Vec<Directive>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TypeCondition {
    On(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InlineFragment {
    pub position: Pos,
    pub type_condition: Option<TypeCondition>,
    pub directives: Vec<Directive>,
    pub selection_set: SelectionSet,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Directive {
    pub position: Pos,
    pub name: String,
    pub arguments: Vec<(String, Value)>,
}

/// An integer literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Number(i64);

impl Number {
    pub fn as_i64(&self) -> Option<i64> {
        Some(self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Variable(String),
    Int(Number),
    Float(f64),
    String(String),
    Boolean(bool),
    Null,
    Enum(String),
    List(Vec<Value>),
    Object(BTreeMap<String, Value>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Variable(v) => write!(f, "${v}"),
            Value::Int(n) => write!(f, "{}", n.0),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::String(s) => f.write_str(&serde_json::Value::String(s.clone()).to_string()),
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Null => f.write_str("null"),
            Value::Enum(e) => f.write_str(e),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Object(fields) => {
                f.write_str("{")?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Punct(&'static str),
    Name(String),
    Int(i64),
    Float(f64),
    Str(String),
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Punct(p) => write!(f, "\"{p}\""),
            Tok::Name(n) => write!(f, "name \"{n}\""),
            Tok::Int(i) => write!(f, "integer {i}"),
            Tok::Float(x) => write!(f, "float {x}"),
            Tok::Str(_) => f.write_str("string"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

struct Lexer<'s> {
    src: &'s str,
    off: usize,
    line: usize,
    line_start: usize,
}

impl<'s> Lexer<'s> {
    fn pos_at(&self, off: usize) -> Pos {
        Pos {
            line: self.line,
            column: self.src[self.line_start..off].chars().count() + 1,
        }
    }

    fn err(&self, off: usize, message: impl Into<String>) -> ParseError {
        let pos = self.pos_at(off);
        ParseError::Syntax {
            message: message.into(),
            line: pos.line,
            column: pos.column,
        }
    }

    fn newline(&mut self, after: usize) {
        self.line += 1;
        self.line_start = after;
    }

    fn skip_ignored(&mut self) {
        let bytes = self.src.as_bytes();
        while self.off < bytes.len() {
            match bytes[self.off] {
                b' ' | b'\t' | b',' => self.off += 1,
                b'\n' => {
                    self.off += 1;
                    self.newline(self.off);
                }
                b'\r' => {
                    self.off += 1;
                    if bytes.get(self.off) == Some(&b'\n') {
                        self.off += 1;
                    }
                    self.newline(self.off);
                }
                b'#' => {
                    while self.off < bytes.len()
                        && bytes[self.off] != b'\n'
                        && bytes[self.off] != b'\r'
                    {
                        self.off += 1;
                    }
                }
                0xEF if self.src[self.off..].starts_with('\u{FEFF}') => self.off += 3,
                _ => break,
            }
        }
    }

    /// The next token and its position.
    fn next(&mut self) -> Result<(Tok, Pos), ParseError> {
        self.skip_ignored();
        let start = self.off;
        let pos = self.pos_at(start);
        let bytes = self.src.as_bytes();
        let Some(&c) = bytes.get(start) else {
            return Ok((Tok::Eof, pos));
        };
        let tok = match c {
            b'!' | b'$' | b'&' | b'(' | b')' | b':' | b'=' | b'@' | b'[' | b']' | b'{' | b'|'
            | b'}' => {
                self.off += 1;
                Tok::Punct(match c {
                    b'!' => "!",
                    b'$' => "$",
                    b'&' => "&",
                    b'(' => "(",
                    b')' => ")",
                    b':' => ":",
                    b'=' => "=",
                    b'@' => "@",
                    b'[' => "[",
                    b']' => "]",
                    b'{' => "{",
                    b'|' => "|",
                    _ => "}",
                })
            }
            b'.' => {
                if self.src[start..].starts_with("...") {
                    self.off += 3;
                    Tok::Punct("...")
                } else {
                    return Err(self.err(start, "unexpected \".\", did you mean \"...\"?"));
                }
            }
            b'_' | b'A'..=b'Z' | b'a'..=b'z' => {
                let mut end = start + 1;
                while end < bytes.len()
                    && (bytes[end] == b'_' || bytes[end].is_ascii_alphanumeric())
                {
                    end += 1;
                }
                self.off = end;
                Tok::Name(self.src[start..end].to_string())
            }
            b'-' | b'0'..=b'9' => self.number(start)?,
            b'"' => {
                if self.src[start..].starts_with("\"\"\"") {
                    self.block_string(start)?
                } else {
                    self.string(start)?
                }
            }
            _ => {
                let ch = self.src[start..].chars().next().unwrap_or('?');
                return Err(self.err(start, format!("unexpected character {ch:?}")));
            }
        };
        Ok((tok, pos))
    }

    fn number(&mut self, start: usize) -> Result<Tok, ParseError> {
        let bytes = self.src.as_bytes();
        let mut i = start;
        if bytes[i] == b'-' {
            i += 1;
        }
        let digits = |i: &mut usize| {
            let from = *i;
            while *i < bytes.len() && bytes[*i].is_ascii_digit() {
                *i += 1;
            }
            *i - from
        };
        let int_start = i;
        if digits(&mut i) == 0 {
            return Err(self.err(i, "invalid number, expected digit"));
        }
        if bytes[int_start] == b'0' && i - int_start > 1 {
            return Err(self.err(int_start + 1, "invalid number, unexpected digit after 0"));
        }
        let mut is_float = false;
        if bytes.get(i) == Some(&b'.') {
            is_float = true;
            i += 1;
            if digits(&mut i) == 0 {
                return Err(self.err(i, "invalid number, expected digit after \".\""));
            }
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            is_float = true;
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                return Err(self.err(i, "invalid number, expected digit in exponent"));
            }
        }
        if let Some(&next) = bytes.get(i)
            && (next == b'.' || next == b'_' || next.is_ascii_alphabetic())
        {
            return Err(self.err(i, format!("invalid number, unexpected {:?}", next as char)));
        }
        self.off = i;
        let text = &self.src[start..i];
        if is_float {
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Tok::Float)
                .ok_or_else(|| self.err(start, format!("invalid float {text}")))
        } else {
            text.parse::<i64>()
                .map(Tok::Int)
                .map_err(|_| self.err(start, format!("integer {text} out of range")))
        }
    }

    fn string(&mut self, start: usize) -> Result<Tok, ParseError> {
        let mut out = String::new();
        let mut chars = self.src[start + 1..].char_indices();
        loop {
            let Some((i, c)) = chars.next() else {
                return Err(self.err(start, "unterminated string"));
            };
            let at = start + 1 + i;
            match c {
                '"' => {
                    self.off = at + 1;
                    return Ok(Tok::Str(out));
                }
                '\n' | '\r' => return Err(self.err(at, "unterminated string")),
                '\\' => {
                    let Some((_, e)) = chars.next() else {
                        return Err(self.err(at, "unterminated string"));
                    };
                    match e {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        '/' => out.push('/'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => {
                            let code = self.unicode_escape(&mut chars, at)?;
                            let ch = if (0xD800..0xDC00).contains(&code) {
                                // A surrogate pair written as two escapes.
                                let rest = chars.as_str();
                                if !rest.starts_with("\\u") {
                                    return Err(
                                        self.err(at, "invalid unicode escape: lone surrogate")
                                    );
                                }
                                chars.next();
                                chars.next();
                                let low = self.unicode_escape(&mut chars, at)?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(
                                        self.err(at, "invalid unicode escape: bad surrogate pair")
                                    );
                                }
                                char::from_u32(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
                            } else {
                                char::from_u32(code)
                            };
                            out.push(ch.ok_or_else(|| self.err(at, "invalid unicode escape"))?);
                        }
                        other => {
                            return Err(self.err(at, format!("invalid escape sequence \\{other}")));
                        }
                    }
                }
                c if (c as u32) < 0x20 && c != '\t' => {
                    return Err(self.err(at, format!("invalid character in string: {c:?}")));
                }
                c => out.push(c),
            }
        }
    }

    fn unicode_escape(
        &self,
        chars: &mut std::str::CharIndices<'_>,
        at: usize,
    ) -> Result<u32, ParseError> {
        let rest = chars.as_str();
        if let Some(braced) = rest.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| self.err(at, "invalid unicode escape"))?;
            let code = u32::from_str_radix(&braced[..end], 16)
                .map_err(|_| self.err(at, "invalid unicode escape"))?;
            for _ in 0..end + 2 {
                chars.next();
            }
            return Ok(code);
        }
        let hex: String = rest.chars().take(4).collect();
        if hex.len() != 4 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(self.err(at, "invalid unicode escape"));
        }
        for _ in 0..4 {
            chars.next();
        }
        u32::from_str_radix(&hex, 16).map_err(|_| self.err(at, "invalid unicode escape"))
    }

    fn block_string(&mut self, start: usize) -> Result<Tok, ParseError> {
        let body_start = start + 3;
        let mut raw = String::new();
        let mut i = body_start;
        let src = self.src;
        loop {
            let rest = &src[i..];
            if rest.is_empty() {
                return Err(self.err(start, "unterminated block string"));
            }
            if rest.starts_with("\"\"\"") {
                self.off = i + 3;
                break;
            }
            if rest.starts_with("\\\"\"\"") {
                raw.push_str("\"\"\"");
                i += 4;
                continue;
            }
            let c = rest.chars().next().unwrap_or('\0');
            match c {
                '\n' => {
                    raw.push('\n');
                    i += 1;
                    self.newline(i);
                }
                '\r' => {
                    raw.push('\n');
                    i += 1;
                    if src.as_bytes().get(i) == Some(&b'\n') {
                        i += 1;
                    }
                    self.newline(i);
                }
                c => {
                    raw.push(c);
                    i += c.len_utf8();
                }
            }
        }
        Ok(Tok::Str(block_string_value(&raw)))
    }
}

/// The spec's BlockStringValue: common indentation and blank first/last lines removed.
fn block_string_value(raw: &str) -> String {
    let lines: Vec<&str> = raw.split('\n').collect();
    let indent = lines
        .iter()
        .skip(1)
        .filter_map(|l| {
            let n = l.len() - l.trim_start_matches([' ', '\t']).len();
            (n < l.len()).then_some(n)
        })
        .min()
        .unwrap_or(0);
    let mut out: Vec<&str> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 || l.len() < indent {
                if i == 0 {
                    *l
                } else {
                    l.trim_start_matches([' ', '\t'])
                }
            } else {
                &l[indent..]
            }
        })
        .collect();
    while out
        .first()
        .is_some_and(|l| l.trim_matches([' ', '\t']).is_empty())
    {
        out.remove(0);
    }
    while out
        .last()
        .is_some_and(|l| l.trim_matches([' ', '\t']).is_empty())
    {
        out.pop();
    }
    out.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Parser.

/// Lists, input objects, argument and type brackets may nest this deep (they recurse).
const MAX_VALUE_NESTING: usize = 64;

struct Parser<'s> {
    lexer: Lexer<'s>,
    tok: Tok,
    pos: Pos,
    depth: usize,
    max_depth: usize,
}

/// Parses an executable document; `max_selection_depth` bounds nested selection sets.
pub(crate) fn parse_document(
    src: &str,
    max_selection_depth: usize,
) -> Result<Document, ParseError> {
    let mut lexer = Lexer {
        src,
        off: 0,
        line: 1,
        line_start: 0,
    };
    let (tok, pos) = lexer.next()?;
    let mut p = Parser {
        lexer,
        tok,
        pos,
        depth: 0,
        max_depth: max_selection_depth,
    };
    let mut definitions = Vec::new();
    loop {
        if p.tok == Tok::Eof {
            break;
        }
        definitions.push(p.definition()?);
    }
    if definitions.is_empty() {
        return Err(p.unexpected());
    }
    Ok(Document { definitions })
}

impl Parser<'_> {
    fn bump(&mut self) -> Result<Tok, ParseError> {
        let (tok, pos) = self.lexer.next()?;
        self.pos = pos;
        Ok(std::mem::replace(&mut self.tok, tok))
    }

    fn unexpected(&self) -> ParseError {
        ParseError::Syntax {
            message: format!("unexpected {}", self.tok),
            line: self.pos.line,
            column: self.pos.column,
        }
    }

    fn is(&self, punct: &str) -> bool {
        matches!(&self.tok, Tok::Punct(p) if *p == punct)
    }

    fn is_name(&self, name: &str) -> bool {
        matches!(&self.tok, Tok::Name(n) if n == name)
    }

    fn eat(&mut self, punct: &str) -> Result<bool, ParseError> {
        if self.is(punct) {
            self.bump()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn expect(&mut self, punct: &str) -> Result<(), ParseError> {
        if self.eat(punct)? {
            Ok(())
        } else {
            Err(ParseError::Syntax {
                message: format!("expected \"{punct}\", found {}", self.tok),
                line: self.pos.line,
                column: self.pos.column,
            })
        }
    }

    fn name(&mut self) -> Result<String, ParseError> {
        match &self.tok {
            Tok::Name(_) => match self.bump()? {
                Tok::Name(n) => Ok(n),
                _ => Err(self.unexpected()),
            },
            _ => Err(ParseError::Syntax {
                message: format!("expected name, found {}", self.tok),
                line: self.pos.line,
                column: self.pos.column,
            }),
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_VALUE_NESTING {
            return Err(ParseError::Syntax {
                message: format!("value nested deeper than {MAX_VALUE_NESTING} brackets"),
                line: self.pos.line,
                column: self.pos.column,
            });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn definition(&mut self) -> Result<Definition, ParseError> {
        let position = self.pos;
        if self.is("{") {
            return Ok(Definition::Operation(OperationDefinition::SelectionSet(
                self.selection_set()?,
            )));
        }
        let Tok::Name(keyword) = &self.tok else {
            return Err(self.unexpected());
        };
        match keyword.as_str() {
            "query" | "mutation" | "subscription" => {
                let keyword = keyword.clone();
                self.bump()?;
                let name = if matches!(self.tok, Tok::Name(_)) {
                    Some(self.name()?)
                } else {
                    None
                };
                let variable_definitions = self.variable_definitions()?;
                let directives = self.directives(false)?;
                let selection_set = self.selection_set()?;
                let op = Operation {
                    position,
                    name,
                    variable_definitions,
                    directives,
                    selection_set,
                };
                Ok(Definition::Operation(match keyword.as_str() {
                    "query" => OperationDefinition::Query(op),
                    "mutation" => OperationDefinition::Mutation(op),
                    _ => OperationDefinition::Subscription(op),
                }))
            }
            "fragment" => {
                self.bump()?;
                if self.is_name("on") {
                    return Err(self.unexpected());
                }
                let name = self.name()?;
                if !self.is_name("on") {
                    return Err(ParseError::Syntax {
                        message: format!("expected \"on\", found {}", self.tok),
                        line: self.pos.line,
                        column: self.pos.column,
                    });
                }
                self.bump()?;
                let type_condition = TypeCondition::On(self.name()?);
                let directives = self.directives(false)?;
                let selection_set = self.selection_set()?;
                Ok(Definition::Fragment(FragmentDefinition {
                    position,
                    name,
                    type_condition,
                    directives,
                    selection_set,
                }))
            }
            _ => Err(self.unexpected()),
        }
    }

    fn variable_definitions(&mut self) -> Result<Vec<VariableDefinition>, ParseError> {
        let mut out = Vec::new();
        if !self.is("(") {
            return Ok(out);
        }
        self.enter()?;
        self.bump()?;
        loop {
            let position = self.pos;
            self.expect("$")?;
            let name = self.name()?;
            self.expect(":")?;
            let var_type = self.ty()?;
            let default_value = if self.eat("=")? {
                Some(self.value(true)?)
            } else {
                None
            };
            let directives = self.directives(true)?;
            out.push(VariableDefinition {
                position,
                name,
                var_type,
                default_value,
                directives,
            });
            if self.eat(")")? {
                break;
            }
        }
        self.leave();
        Ok(out)
    }

    fn ty(&mut self) -> Result<TypeRef, ParseError> {
        let base = if self.is("[") {
            self.enter()?;
            self.bump()?;
            let inner = self.ty()?;
            self.expect("]")?;
            self.leave();
            TypeRef::List(Box::new(inner))
        } else {
            TypeRef::Named(self.name()?)
        };
        Ok(if self.eat("!")? {
            TypeRef::NonNull(Box::new(base))
        } else {
            base
        })
    }

    fn directives(&mut self, is_const: bool) -> Result<Vec<Directive>, ParseError> {
        let mut out = Vec::new();
        while self.is("@") {
            let position = self.pos;
            self.bump()?;
            let name = self.name()?;
            let arguments = self.arguments(is_const)?;
            out.push(Directive {
                position,
                name,
                arguments,
            });
        }
        Ok(out)
    }

    fn arguments(&mut self, is_const: bool) -> Result<Vec<(String, Value)>, ParseError> {
        let mut out = Vec::new();
        if !self.is("(") {
            return Ok(out);
        }
        self.enter()?;
        self.bump()?;
        loop {
            let name = self.name()?;
            self.expect(":")?;
            out.push((name, self.value(is_const)?));
            if self.eat(")")? {
                break;
            }
        }
        self.leave();
        Ok(out)
    }

    /// A selection set, parsed with an explicit stack: nesting costs heap, not call stack.
    fn selection_set(&mut self) -> Result<SelectionSet, ParseError> {
        enum Owner {
            Root,
            Field {
                position: Pos,
                alias: Option<String>,
                name: String,
                arguments: Vec<(String, Value)>,
                directives: Vec<Directive>,
            },
            Inline {
                position: Pos,
                type_condition: Option<TypeCondition>,
                directives: Vec<Directive>,
            },
        }
        struct Frame {
            owner: Owner,
            start: Pos,
            items: Vec<Selection>,
        }
        let mut stack = vec![Frame {
            owner: Owner::Root,
            start: self.pos,
            items: Vec::new(),
        }];
        self.expect("{")?;
        loop {
            if self.is("}") {
                let end = self.pos;
                let Some(frame) = stack.pop() else {
                    return Err(self.unexpected());
                };
                if frame.items.is_empty() {
                    return Err(ParseError::Syntax {
                        message: "expected name, found \"}\"".into(),
                        line: end.line,
                        column: end.column,
                    });
                }
                self.bump()?;
                let selection_set = SelectionSet {
                    span: (frame.start, end),
                    items: frame.items,
                };
                let selection = match frame.owner {
                    Owner::Root => return Ok(selection_set),
                    Owner::Field {
                        position,
                        alias,
                        name,
                        arguments,
                        directives,
                    } => Selection::Field(Field {
                        position,
                        alias,
                        name,
                        arguments,
                        directives,
                        selection_set,
                    }),
                    Owner::Inline {
                        position,
                        type_condition,
                        directives,
                    } => Selection::InlineFragment(InlineFragment {
                        position,
                        type_condition,
                        directives,
                        selection_set,
                    }),
                };
                match stack.last_mut() {
                    Some(parent) => parent.items.push(selection),
                    None => return Err(self.unexpected()),
                }
                continue;
            }
            let position = self.pos;
            let (selection, opened) = if self.eat("...")? {
                if matches!(&self.tok, Tok::Name(n) if n != "on") {
                    let fragment_name = self.name()?;
                    let directives = self.directives(false)?;
                    (
                        Some(Selection::FragmentSpread(FragmentSpread {
                            position,
                            fragment_name,
                            directives,
                        })),
                        None,
                    )
                } else {
                    let type_condition = if self.is_name("on") {
                        self.bump()?;
                        Some(TypeCondition::On(self.name()?))
                    } else {
                        None
                    };
                    let directives = self.directives(false)?;
                    (
                        None,
                        Some(Owner::Inline {
                            position,
                            type_condition,
                            directives,
                        }),
                    )
                }
            } else {
                let first = self.name()?;
                let (alias, name) = if self.eat(":")? {
                    (Some(first), self.name()?)
                } else {
                    (None, first)
                };
                let arguments = self.arguments(false)?;
                let directives = self.directives(false)?;
                if self.is("{") {
                    (
                        None,
                        Some(Owner::Field {
                            position,
                            alias,
                            name,
                            arguments,
                            directives,
                        }),
                    )
                } else {
                    let selection_set = SelectionSet {
                        span: (self.pos, self.pos),
                        items: Vec::new(),
                    };
                    (
                        Some(Selection::Field(Field {
                            position,
                            alias,
                            name,
                            arguments,
                            directives,
                            selection_set,
                        })),
                        None,
                    )
                }
            };
            if let Some(selection) = selection
                && let Some(top) = stack.last_mut()
            {
                top.items.push(selection);
            }
            if let Some(owner) = opened {
                if stack.len() >= self.max_depth {
                    return Err(ParseError::Syntax {
                        message: format!(
                            "document nested deeper than {} selection sets",
                            self.max_depth
                        ),
                        line: self.pos.line,
                        column: self.pos.column,
                    });
                }
                let start = self.pos;
                self.expect("{")?;
                stack.push(Frame {
                    owner,
                    start,
                    items: Vec::new(),
                });
            }
        }
    }

    fn value(&mut self, is_const: bool) -> Result<Value, ParseError> {
        let pos = self.pos;
        match &self.tok {
            Tok::Punct("$") if !is_const => {
                self.bump()?;
                Ok(Value::Variable(self.name()?))
            }
            Tok::Punct("[") => {
                self.enter()?;
                self.bump()?;
                let mut items = Vec::new();
                while !self.eat("]")? {
                    items.push(self.value(is_const)?);
                }
                self.leave();
                Ok(Value::List(items))
            }
            Tok::Punct("{") => {
                self.enter()?;
                self.bump()?;
                let mut fields = BTreeMap::new();
                while !self.eat("}")? {
                    let field_pos = self.pos;
                    let name = self.name()?;
                    self.expect(":")?;
                    let value = self.value(is_const)?;
                    if fields.insert(name.clone(), value).is_some() {
                        return Err(ParseError::Syntax {
                            message: format!("there can be only one input field named \"{name}\""),
                            line: field_pos.line,
                            column: field_pos.column,
                        });
                    }
                }
                self.leave();
                Ok(Value::Object(fields))
            }
            Tok::Int(_) | Tok::Float(_) | Tok::Str(_) | Tok::Name(_) => Ok(match self.bump()? {
                Tok::Int(i) => Value::Int(Number(i)),
                Tok::Float(f) => Value::Float(f),
                Tok::Str(s) => Value::String(s),
                Tok::Name(n) => match n.as_str() {
                    "true" => Value::Boolean(true),
                    "false" => Value::Boolean(false),
                    "null" => Value::Null,
                    _ => Value::Enum(n),
                },
                _ => {
                    return Err(ParseError::Syntax {
                        message: "unexpected token".into(),
                        line: pos.line,
                        column: pos.column,
                    });
                }
            }),
            _ => Err(self.unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Document {
        parse_document(src, 100).unwrap()
    }

    fn err(src: &str) -> String {
        parse_document(src, 100).unwrap_err().to_string()
    }

    #[test]
    fn parses_operations_fragments_and_values() {
        let doc = parse(
            r#"query Q($a: [Int!]! = [1], $b: String) @dir { x: f(a: $a, s: "q\"\u00e9\uD83D\uDE00", f: -1.5e3, e: ENUM, o: {k: [true, null]}) { ...F ... on T { g } ... @skip(if: true) { h } } }
               fragment F on T { i }
               { j }"#,
        );
        assert_eq!(doc.definitions.len(), 3);
        let Definition::Operation(OperationDefinition::Query(q)) = &doc.definitions[0] else {
            panic!()
        };
        assert_eq!(q.name.as_deref(), Some("Q"));
        assert_eq!(
            q.variable_definitions[0].default_value,
            Some(Value::List(vec![Value::Int(Number(1))]))
        );
        let Selection::Field(f) = &q.selection_set.items[0] else {
            panic!()
        };
        assert_eq!(f.alias.as_deref(), Some("x"));
        assert_eq!(f.arguments[1].1, Value::String("q\"é😀".into()));
        assert_eq!(f.arguments[2].1, Value::Float(-1500.0));
        assert_eq!(f.selection_set.items.len(), 3);
        assert_eq!(
            f.position,
            Pos {
                line: 1,
                column: 47
            }
        );
    }

    #[test]
    fn block_strings_strip_indentation() {
        let doc = parse("{ f(s: \"\"\"\n    hello\n      world\n    \\\"\"\" \n  \"\"\") }");
        let Definition::Operation(OperationDefinition::SelectionSet(s)) = &doc.definitions[0]
        else {
            panic!()
        };
        let Selection::Field(f) = &s.items[0] else {
            panic!()
        };
        assert_eq!(
            f.arguments[0].1,
            Value::String("hello\n  world\n\"\"\" ".into())
        );
    }

    #[test]
    fn reports_positions_of_errors() {
        assert_eq!(
            err("{ a "),
            "syntax error at 1:5: expected name, found end of input"
        );
        assert_eq!(
            err("{ a(x: 01) }"),
            "syntax error at 1:9: invalid number, unexpected digit after 0"
        );
        assert_eq!(
            err("{ a(x: \"open) }"),
            "syntax error at 1:8: unterminated string"
        );
        assert_eq!(
            err("{ a(x: {k: 1, k: 2}) }"),
            "syntax error at 1:15: there can be only one input field named \"k\""
        );
        assert_eq!(
            err("type T { a: Int }"),
            "syntax error at 1:1: unexpected name \"type\""
        );
        assert_eq!(err(""), "syntax error at 1:1: unexpected end of input");
        assert_eq!(
            err("query($v: Int = $w) { a }"),
            "syntax error at 1:17: unexpected \"$\""
        );
        assert_eq!(
            err("{ a(x: 99999999999999999999) }"),
            "syntax error at 1:8: integer 99999999999999999999 out of range"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}{}", "{a".repeat(101), "}".repeat(101));
        assert!(
            err(&deep).contains("nested deeper than 100 selection sets"),
            "{}",
            err(&deep)
        );
        let ok = format!("{{{}b{}", "a{".repeat(99), "}".repeat(100));
        parse(&ok);
        let lists = format!("{{a(x: {}1{})}}", "[".repeat(65), "]".repeat(65));
        assert!(
            err(&lists).contains("value nested deeper than 64 brackets"),
            "{}",
            err(&lists)
        );
        assert_eq!(
            err("{ a { } }"),
            "syntax error at 1:7: expected name, found \"}\""
        );
    }
}
