//! [`ParseError`] (the text is no valid Dockerfile) and [`BuildError`] (a parsed Dockerfile
//! cannot be translated with the given options), both naming the 1-based line they concern.

use dagr_solver::GraphError;

use crate::shell::ShellError;

/// A Dockerfile that does not parse, at line `line`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dockerfile line {line}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub kind: ParseErrorKind,
}

impl ParseError {
    pub(crate) fn new(line: usize, kind: ParseErrorKind) -> Self {
        ParseError { line, kind }
    }
}

/// What is wrong with a Dockerfile's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("file with no instructions")]
    NoInstructions,
    #[error("dockerfile contains no stages to build (no FROM instruction)")]
    NoStages,
    #[error("{0}")]
    Directive(String),
    #[error("unknown instruction {0:?}")]
    UnknownInstruction(String),
    #[error("{0} instruction before the first FROM: only ARG may come before it")]
    BeforeFrom(String),
    #[error("unknown flag {flag} for {instruction}")]
    UnknownFlag { instruction: String, flag: String },
    #[error("{0}")]
    Flag(String),
    #[error("{instruction} requires {want}")]
    Arguments {
        instruction: &'static str,
        want: &'static str,
    },
    #[error("unterminated heredoc {0:?}")]
    UnterminatedHeredoc(String),
    #[error("invalid heredoc: {0}")]
    Heredoc(String),
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    #[error("{0}")]
    Invalid(String),
}

/// A Dockerfile that cannot be translated, at `line` when the error concerns one.
#[derive(Debug, thiserror::Error)]
#[error("{}{kind}", line_prefix(*.line))]
pub struct BuildError {
    pub line: Option<usize>,
    pub kind: BuildErrorKind,
}

fn line_prefix(line: Option<usize>) -> String {
    line.map(|l| format!("dockerfile line {l}: "))
        .unwrap_or_default()
}

impl BuildError {
    pub(crate) fn at(line: usize, kind: BuildErrorKind) -> Self {
        BuildError {
            line: Some(line),
            kind,
        }
    }

    pub(crate) fn global(kind: BuildErrorKind) -> Self {
        BuildError { line: None, kind }
    }
}

/// Why a Dockerfile cannot be translated.
#[derive(Debug, thiserror::Error)]
pub enum BuildErrorKind {
    #[error("target stage {0:?} could not be found")]
    UnknownTarget(String),
    #[error("invalid stage index {0}")]
    InvalidStageIndex(i64),
    #[error("cannot use stage {stage:?} here: it needs to be defined before the current stage")]
    StageNotDefinedYet { stage: String },
    #[error("{0:?} is not a valid image reference")]
    InvalidReference(String),
    #[error("base name ({0}) should not be blank")]
    BlankBaseName(String),
    #[error("invalid platform {0:?}: want os/architecture[/variant]")]
    InvalidPlatform(String),
    #[error("image {0:?} was not resolved: pass every image images_needed lists")]
    ImageNotResolved(String),
    #[error(
        "variable expansion is not supported for --from ({0:?}): define a stage with FROM instead"
    )]
    FromExpansion(String),
    #[error("failed to process {word:?}: {source}")]
    Expansion { word: String, source: ShellError },
    #[error("unsupported mount type {0:?}")]
    UnknownMountType(String),
    #[error("invalid mount: {0}")]
    Mount(String),
    #[error("secret {0:?} is required but was not provided")]
    MissingSecret(String),
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error(
        "--chown={0}: only numeric uid[:gid] (or root) is supported; names would need the image's /etc/passwd"
    )]
    OwnerName(String),
    #[error("{0}")]
    Invalid(String),
    #[error("onbuild trigger: {0}")]
    Trigger(ParseErrorKind),
    #[error("building the graph: {0}")]
    Graph(#[from] GraphError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_line() {
        let err = ParseError::new(3, ParseErrorKind::UnknownInstruction("FORM".into()));
        assert_eq!(
            err.to_string(),
            "dockerfile line 3: unknown instruction \"FORM\""
        );
        let err = BuildError::at(7, BuildErrorKind::UnknownMountType("bogus".into()));
        assert_eq!(
            err.to_string(),
            "dockerfile line 7: unsupported mount type \"bogus\""
        );
        let err = BuildError::global(BuildErrorKind::UnknownTarget("x".into()));
        assert_eq!(err.to_string(), "target stage \"x\" could not be found");
    }
}
