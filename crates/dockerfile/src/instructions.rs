//! Typed instructions: [`parse`] turns a Dockerfile's text into a [`Dockerfile`] (the ARGs
//! before the first FROM and the [`Stage`]s with their [`Command`]s), checking every
//! instruction's arguments and flags as BuildKit's `instructions` package does. Arguments are
//! kept unexpanded: variables are expanded when translating, with the stage's variables.

use crate::config::parse_duration;
use crate::error::{ParseError, ParseErrorKind};
use crate::flags::{FlagKind, Flags};
use crate::parser::{
    self, Heredoc, Node, json_array, parse_heredoc, split_command, split_whitespace, split_words,
};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The `# syntax=` directive, recorded only.
    pub syntax: Option<String>,
    /// The escape character (`\` or the `# escape=` directive's).
    pub escape: char,
    /// The ARG instructions before the first FROM (each an [`Instruction::Arg`]).
    pub meta_args: Vec<Command>,
    pub stages: Vec<Stage>,
}

/// A build stage: its FROM line and the instructions after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The line of the FROM instruction.
    pub line: usize,
    /// The base, unexpanded: an image reference, a previous stage's name or `scratch`.
    pub base: String,
    /// The stage name (`AS name`), lowercased.
    pub name: Option<String>,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    pub commands: Vec<Command>,
}

/// An instruction and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub line: usize,
    pub instruction: Instruction,
}

/// An instruction of a stage (FROM starts a [`Stage`] instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Arg(Vec<ArgDecl>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Maintainer(String),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Shell(Vec<String>),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Run(Run),
    Copy(Copy),
    Add(Add),
    Healthcheck(HealthcheckSpec),
    /// The trigger instruction's text (with its heredocs), recorded in the config.
    OnBuild(String),
}

/// `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// `name=value` of ENV and LABEL (quotes still in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// The command of RUN, CMD or ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The exec form's arguments, or the shell form's command as the one element.
    pub args: Vec<String>,
    /// JSON (exec) form: run as given rather than through the stage's shell.
    pub exec_form: bool,
    pub heredocs: Vec<Heredoc>,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Default,
    None,
    Host,
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: CommandLine,
    /// `--mount` values, unexpanded.
    pub mounts: Vec<String>,
    pub network: Network,
    /// `--security=insecure`.
    pub insecure: bool,
    /// `--device` values.
    pub devices: Vec<String>,
}

/// A heredoc source of COPY/ADD: a file named `name` with `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    pub name: String,
    pub data: String,
    /// Expand variables in `data` (the delimiter was not quoted).
    pub expand: bool,
}

/// The sources and destination of COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub sources: Vec<String>,
    pub inline: Vec<InlineFile>,
    pub dest: String,
}

/// COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub files: Files,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
}

/// ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub files: Files,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub keep_git_dir: Option<bool>,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    pub exclude: Vec<String>,
}

/// HEALTHCHECK: NONE, or a test with its timings (nanoseconds, 0 = inherit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckSpec {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let (directives, nodes) = parser::parse_nodes(text)?;
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut last_line = 1;
    for node in &nodes {
        let line = node.line;
        last_line = line;
        let at = |kind| ParseError::new(line, kind);
        if node.keyword.eq_ignore_ascii_case("from") {
            stages.push(parse_from(node).map_err(at)?);
            continue;
        }
        let instruction = parse_instruction(node, directives.escape).map_err(at)?;
        let command = Command { line, instruction };
        match stages.last_mut() {
            Some(stage) => stage.commands.push(command),
            None if matches!(command.instruction, Instruction::Arg(_)) => meta_args.push(command),
            None => {
                return Err(at(ParseErrorKind::BeforeFrom(
                    node.keyword.to_ascii_uppercase(),
                )));
            }
        }
    }
    if stages.is_empty() {
        return Err(ParseError::new(last_line, ParseErrorKind::NoStages));
    }
    Ok(Dockerfile {
        syntax: directives.syntax,
        escape: directives.escape,
        meta_args,
        stages,
    })
}

/// Parses an ONBUILD trigger expression into its instruction.
pub(crate) fn parse_trigger(expression: &str) -> Result<Instruction, ParseErrorKind> {
    let (directives, nodes) = parser::parse_nodes(expression).map_err(|e| e.kind)?;
    let [node] = nodes.as_slice() else {
        return Err(ParseErrorKind::Invalid(
            "onbuild trigger should be a single expression".to_owned(),
        ));
    };
    if node.keyword.eq_ignore_ascii_case("from") {
        return Err(ParseErrorKind::Invalid(
            "FROM isn't allowed as an ONBUILD trigger".to_owned(),
        ));
    }
    parse_instruction(node, directives.escape)
}

const ARGS_ONE: &str = "exactly one argument";
const ARGS_SOME: &str = "at least one argument";

fn parse_from(node: &Node) -> Result<Stage, ParseErrorKind> {
    let args = split_whitespace(&node.rest);
    let name = match args.as_slice() {
        [_] => None,
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_ascii_lowercase();
            if !is_valid_stage_name(&lower) {
                return Err(ParseErrorKind::Invalid(format!(
                    "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                )));
            }
            Some(lower)
        }
        _ => {
            return Err(ParseErrorKind::Arguments {
                instruction: "FROM",
                want: "either one or three arguments",
            });
        }
    };
    let flags = Flags::parse("FROM", &node.flags, &[("platform", FlagKind::String)])?;
    Ok(Stage {
        line: node.line,
        base: args.first().cloned().unwrap_or_default(),
        name,
        platform: flags.string("platform"),
        commands: Vec::new(),
    })
}

/// `^[a-z][a-z0-9-_.]*$`.
fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Parses one (non-FROM) instruction.
pub(crate) fn parse_instruction(node: &Node, escape: char) -> Result<Instruction, ParseErrorKind> {
    let keyword = node.keyword.to_ascii_lowercase();
    let no_flags = |name: &str| Flags::parse(name, &node.flags, &[]).map(|_| ());
    match keyword.as_str() {
        "arg" => {
            no_flags("ARG")?;
            parse_arg(node, escape)
        }
        "env" => {
            no_flags("ENV")?;
            parse_name_values(node, escape, "ENV").map(Instruction::Env)
        }
        "label" => {
            no_flags("LABEL")?;
            parse_name_values(node, escape, "LABEL").map(Instruction::Label)
        }
        "maintainer" => one_arg(node, "MAINTAINER").map(Instruction::Maintainer),
        "workdir" => one_arg(node, "WORKDIR").map(Instruction::Workdir),
        "user" => one_arg(node, "USER").map(Instruction::User),
        "stopsignal" => one_arg(node, "STOPSIGNAL").map(Instruction::StopSignal),
        "expose" => {
            no_flags("EXPOSE")?;
            some_args(split_whitespace(&node.rest), "EXPOSE").map(Instruction::Expose)
        }
        "volume" => {
            no_flags("VOLUME")?;
            parse_volume(node)
        }
        "shell" => {
            no_flags("SHELL")?;
            parse_shell(node)
        }
        "cmd" => {
            no_flags("CMD")?;
            command_line(node, "CMD").map(Instruction::Cmd)
        }
        "entrypoint" => {
            no_flags("ENTRYPOINT")?;
            command_line(node, "ENTRYPOINT").map(Instruction::Entrypoint)
        }
        "run" => parse_run(node),
        "copy" => parse_copy(node),
        "add" => parse_add(node),
        "healthcheck" => parse_healthcheck(node),
        "onbuild" => {
            no_flags("ONBUILD")?;
            parse_onbuild(node, escape)
        }
        _ => Err(ParseErrorKind::UnknownInstruction(node.keyword.clone())),
    }
}

fn one_arg(node: &Node, instruction: &'static str) -> Result<String, ParseErrorKind> {
    Flags::parse(instruction, &node.flags, &[])?;
    if node.rest.is_empty() {
        return Err(ParseErrorKind::Arguments {
            instruction,
            want: ARGS_ONE,
        });
    }
    Ok(node.rest.clone())
}

fn some_args(args: Vec<String>, instruction: &'static str) -> Result<Vec<String>, ParseErrorKind> {
    if args.is_empty() {
        return Err(ParseErrorKind::Arguments {
            instruction,
            want: ARGS_SOME,
        });
    }
    Ok(args)
}

fn parse_arg(node: &Node, escape: char) -> Result<Instruction, ParseErrorKind> {
    let words = some_args(split_words(&node.rest, escape), "ARG")?;
    let decls = words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(ParseErrorKind::Invalid(
                "ARG names can not be blank".to_owned(),
            )),
            Some((name, value)) => Ok(ArgDecl {
                name: name.to_owned(),
                default: Some(value.to_owned()),
            }),
            None => Ok(ArgDecl {
                name: word,
                default: None,
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok(Instruction::Arg(decls))
}

/// ENV and LABEL: `name=value ...`, or the legacy `name value` (the value is the rest).
fn parse_name_values(
    node: &Node,
    escape: char,
    instruction: &'static str,
) -> Result<Vec<KeyValue>, ParseErrorKind> {
    let words = some_args(split_words(&node.rest, escape), instruction)?;
    let pairs = if words[0].contains('=') {
        words
            .iter()
            .map(|word| match word.split_once('=') {
                Some((key, value)) => Ok(KeyValue {
                    key: key.to_owned(),
                    value: value.to_owned(),
                }),
                None => Err(ParseErrorKind::Invalid(format!(
                    "syntax error - can't find = in {word:?}. Must be of the form: name=value"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let Some(at) = node.rest.find(parser::is_separator) else {
            return Err(ParseErrorKind::Invalid(format!(
                "{instruction} must have two arguments"
            )));
        };
        vec![KeyValue {
            key: node.rest[..at].to_owned(),
            value: node.rest[at..]
                .trim_start_matches(parser::is_separator)
                .to_owned(),
        }]
    };
    if pairs.iter().any(|kv| kv.key.is_empty()) {
        return Err(ParseErrorKind::Invalid(format!(
            "{instruction} names can not be blank"
        )));
    }
    Ok(pairs)
}

/// JSON list or whitespace-separated words (VOLUME, COPY, ADD).
fn json_or_words(rest: &str) -> Result<Vec<String>, ParseErrorKind> {
    Ok(match json_array(rest)? {
        Some(items) => items,
        None => split_whitespace(rest),
    })
}

fn parse_volume(node: &Node) -> Result<Instruction, ParseErrorKind> {
    let volumes = some_args(json_or_words(&node.rest)?, "VOLUME")?;
    let volumes: Vec<String> = volumes.iter().map(|v| v.trim().to_owned()).collect();
    if volumes.iter().any(String::is_empty) {
        return Err(ParseErrorKind::Invalid(
            "VOLUME specified can not be an empty string".to_owned(),
        ));
    }
    Ok(Instruction::Volume(volumes))
}

fn parse_shell(node: &Node) -> Result<Instruction, ParseErrorKind> {
    match json_array(&node.rest)? {
        Some(args) if !args.is_empty() => Ok(Instruction::Shell(args)),
        Some(_) => Err(ParseErrorKind::Arguments {
            instruction: "SHELL",
            want: ARGS_SOME,
        }),
        None if node.rest.is_empty() => Err(ParseErrorKind::Arguments {
            instruction: "SHELL",
            want: ARGS_SOME,
        }),
        None => Err(ParseErrorKind::Invalid(
            "SHELL requires the arguments to be in JSON form".to_owned(),
        )),
    }
}

/// The exec (JSON) or shell form of RUN, CMD, ENTRYPOINT; an empty JSON list is kept (it
/// clears CMD/ENTRYPOINT), no arguments at all are an error.
fn command_line(node: &Node, instruction: &'static str) -> Result<CommandLine, ParseErrorKind> {
    let (args, exec_form) = match json_array(&node.rest)? {
        Some(args) => (args, true),
        None if node.rest.is_empty() => {
            return Err(ParseErrorKind::Arguments {
                instruction,
                want: ARGS_SOME,
            });
        }
        None => (vec![node.rest.clone()], false),
    };
    Ok(CommandLine {
        args,
        exec_form,
        heredocs: node.heredocs.clone(),
    })
}

fn parse_run(node: &Node) -> Result<Instruction, ParseErrorKind> {
    let flags = Flags::parse(
        "RUN",
        &node.flags,
        &[
            ("mount", FlagKind::Strings),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
            ("device", FlagKind::Strings),
        ],
    )?;
    let network = match flags.string("network").as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(other) => {
            return Err(ParseErrorKind::Invalid(format!(
                "invalid network mode {other:?}"
            )));
        }
    };
    let insecure = match flags.string("security").as_deref() {
        None | Some("sandbox") => false,
        Some("insecure") => true,
        Some(other) => {
            return Err(ParseErrorKind::Invalid(format!(
                "security {other:?} is not valid"
            )));
        }
    };
    let command = command_line(node, "RUN")?;
    if command.args.is_empty() {
        return Err(ParseErrorKind::Arguments {
            instruction: "RUN",
            want: ARGS_SOME,
        });
    }
    Ok(Instruction::Run(Run {
        command,
        mounts: flags.list("mount"),
        network,
        insecure,
        devices: flags.list("device"),
    }))
}

fn parse_files(node: &Node, instruction: &'static str) -> Result<Files, ParseErrorKind> {
    let mut args = json_or_words(&node.rest)?;
    if args.len() < 2 {
        return Err(ParseErrorKind::Arguments {
            instruction,
            want: "at least two arguments, but only one was provided: the destination could not be determined",
        });
    }
    let dest = args.pop().unwrap_or_default();
    if matches!(parse_heredoc(&dest), Ok(Some(_))) {
        return Err(ParseErrorKind::Invalid(format!(
            "{instruction} cannot accept a heredoc as a destination"
        )));
    }
    let mut files = Files {
        sources: Vec::new(),
        inline: Vec::new(),
        dest,
    };
    for src in args {
        match parse_heredoc(&src) {
            Ok(Some(doc)) => {
                let body = node.heredocs.iter().find(|h| h.name == doc.name);
                let data = body.map(|h| h.content.clone()).unwrap_or_default();
                let data = if doc.chomp {
                    parser::chomp(&data)
                } else {
                    data
                };
                files.inline.push(InlineFile {
                    name: doc.name,
                    data,
                    expand: doc.expand,
                });
            }
            _ => files.sources.push(src),
        }
    }
    Ok(files)
}

fn parse_copy(node: &Node) -> Result<Instruction, ParseErrorKind> {
    let flags = Flags::parse(
        "COPY",
        &node.flags,
        &[
            ("chown", FlagKind::String),
            ("from", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
            ("parents", FlagKind::Bool),
        ],
    )?;
    Ok(Instruction::Copy(Copy {
        files: parse_files(node, "COPY")?,
        from: flags.string("from").filter(|f| !f.is_empty()),
        chown: flags.string("chown").filter(|f| !f.is_empty()),
        chmod: flags.string("chmod").filter(|f| !f.is_empty()),
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        exclude: flags.list("exclude"),
    }))
}

fn parse_add(node: &Node) -> Result<Instruction, ParseErrorKind> {
    let flags = Flags::parse(
        "ADD",
        &node.flags,
        &[
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::String),
            ("unpack", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ],
    )?;
    Ok(Instruction::Add(Add {
        files: parse_files(node, "ADD")?,
        chown: flags.string("chown").filter(|f| !f.is_empty()),
        chmod: flags.string("chmod").filter(|f| !f.is_empty()),
        link: flags.bool("link").unwrap_or(false),
        keep_git_dir: flags.bool("keep-git-dir"),
        checksum: flags.string("checksum").filter(|f| !f.is_empty()),
        unpack: flags.bool("unpack"),
        exclude: flags.list("exclude"),
    }))
}

fn parse_healthcheck(node: &Node) -> Result<Instruction, ParseErrorKind> {
    let flags = Flags::parse(
        "HEALTHCHECK",
        &node.flags,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    let rest = node.rest.as_str();
    let (kind, cmd) = match rest.find(char::is_whitespace) {
        Some(at) => (&rest[..at], rest[at..].trim_start()),
        None => (rest, ""),
    };
    if kind.is_empty() {
        return Err(ParseErrorKind::Arguments {
            instruction: "HEALTHCHECK",
            want: ARGS_SOME,
        });
    }
    let kind = kind.to_ascii_uppercase();
    if kind == "NONE" {
        if !cmd.is_empty() {
            return Err(ParseErrorKind::Invalid(
                "HEALTHCHECK NONE takes no arguments".to_owned(),
            ));
        }
        return Ok(Instruction::Healthcheck(HealthcheckSpec {
            test: vec![kind],
            interval: 0,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 0,
        }));
    }
    if kind != "CMD" {
        return Err(ParseErrorKind::Invalid(format!(
            "unknown type {kind:?} in HEALTHCHECK (try CMD)"
        )));
    }
    let test = match json_array(cmd)? {
        Some(args) => [vec!["CMD".to_owned()], args].concat(),
        None if cmd.is_empty() => vec!["CMD".to_owned()],
        None => vec!["CMD-SHELL".to_owned(), cmd.to_owned()],
    };
    if test.len() < 2 {
        return Err(ParseErrorKind::Invalid(
            "missing command after HEALTHCHECK CMD".to_owned(),
        ));
    }
    let interval = |name: &str| interval_flag(&flags, name);
    let retries = match flags.string("retries") {
        None => 0,
        Some(r) => match r.parse::<i32>() {
            Ok(n) if n >= 0 => i64::from(n),
            Ok(n) => {
                return Err(ParseErrorKind::Invalid(format!(
                    "--retries cannot be negative ({n})"
                )));
            }
            Err(_) => {
                return Err(ParseErrorKind::Invalid(format!(
                    "invalid value {r:?} for --retries"
                )));
            }
        },
    };
    Ok(Instruction::Healthcheck(HealthcheckSpec {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    }))
}

/// A HEALTHCHECK duration flag: 0 when absent; otherwise at least 1ms (or exactly 0).
fn interval_flag(flags: &Flags, name: &str) -> Result<i64, ParseErrorKind> {
    let Some(text) = flags.string(name) else {
        return Ok(0);
    };
    if text.is_empty() {
        return Ok(0);
    }
    let nanos =
        parse_duration(&text).map_err(|e| ParseErrorKind::Invalid(format!("--{name}: {e}")))?;
    if nanos != 0 && nanos < 1_000_000 {
        return Err(ParseErrorKind::Invalid(format!(
            "interval --{name} cannot be less than 1ms"
        )));
    }
    Ok(nanos)
}

fn parse_onbuild(node: &Node, escape: char) -> Result<Instruction, ParseErrorKind> {
    if node.rest.is_empty() {
        return Err(ParseErrorKind::Arguments {
            instruction: "ONBUILD",
            want: ARGS_SOME,
        });
    }
    let inner = split_command(&node.rest, escape, node.line)?;
    let trigger = inner.keyword.to_ascii_uppercase();
    match trigger.as_str() {
        "ONBUILD" => {
            return Err(ParseErrorKind::Invalid(
                "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_owned(),
            ));
        }
        "MAINTAINER" | "FROM" => {
            return Err(ParseErrorKind::Invalid(format!(
                "{trigger} isn't allowed as an ONBUILD trigger"
            )));
        }
        _ => {}
    }
    let original = node.original.trim_start();
    let expression = original
        .get(..7)
        .filter(|kw| kw.eq_ignore_ascii_case("onbuild"))
        .map_or(original, |_| original[7..].trim_start());
    let mut expression = expression.to_owned();
    for doc in &node.heredocs {
        expression.push('\n');
        expression.push_str(&doc.content);
        expression.push_str(&doc.name);
    }
    Ok(Instruction::OnBuild(expression))
}

#[cfg(test)]
mod tests;
